"""The one base of every error a user can cause: a bad photo, model file, dataset, download,
cache file or converter input. Its message is advice to a student or an instructor, shown as it
is by the app and the command line; anything else that is raised is a bug and is not caught
silently.

>>> from featapp.engine.images import ImageError
>>> issubclass(ImageError, FeatappError) and issubclass(ImageError, ValueError)
True
"""

from __future__ import annotations

__all__ = ["FeatappError"]


class FeatappError(Exception):
    """An error a user can cause and fix; ``str(err)`` says how."""
