"""Support for the tests: model and image factories, AppTest and browser helpers."""
