"""Datasets on disk, the course photos' download, and which photos a model was trained on."""
