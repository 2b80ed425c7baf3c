"""The converter's one user-facing error type."""

from __future__ import annotations

from featapp.errors import FeatappError


class ConversionError(FeatappError):
    """A model file that cannot be converted, with a one-line message saying why and what to do.

    The command line prints the message alone (no traceback unless ``--verbose``) and
    exits with status 1. Anything else that goes wrong is a bug and keeps its traceback.
    """
