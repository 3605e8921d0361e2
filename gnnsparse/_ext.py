"""Loader for the compiled extension ``gnnsparse._C``.

Importing ``gnnsparse._C`` (a plain shared library with a minimal module init)
runs its static initialisers, which register the ``torch.ops.gnnsparse.*``
operator schemas and their CPU kernels.
"""

from __future__ import annotations

import importlib

import torch

__all__ = ["load", "available"]

_BUILD_HINT = (
    "gnnsparse's C++ extension (gnnsparse._C) is not built or failed to load. Build it from the "
    "repository root with `pip install --no-build-isolation -e .` (torch must be installed first)."
)

_loaded = False
_error: BaseException | None = None


def load() -> None:
    """Load ``gnnsparse._C`` once (idempotent).

    Raises:
        ImportError: the extension is missing or cannot be loaded (message says how to build it).
    """
    global _loaded, _error
    if _loaded:
        return
    if _error is None:
        try:
            importlib.import_module("gnnsparse._C")
            if not hasattr(torch.ops.gnnsparse, "csr_linear"):
                raise ImportError("gnnsparse._C loaded but registered no torch.ops.gnnsparse.csr_linear")
        except (ImportError, OSError) as e:  # OSError: unresolved symbols / wrong torch ABI
            _error = e
        else:
            _loaded = True
            return
    raise ImportError(f"{_BUILD_HINT} (original error: {_error})") from _error


def available() -> bool:
    """True if ``gnnsparse._C`` is (or can be) loaded."""
    if _loaded:
        return True
    if _error is not None:
        return False
    try:
        load()
    except ImportError:
        return False
    return True
