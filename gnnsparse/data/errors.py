"""The single exception type of the data layer."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad, missing or unusable graph data.

    Messages are one line and name the file (and the 1-based line number where
    the problem is in a line) or the directory that was looked at.
    """
