"""Loader for the compiled extensions ``gnnsparse._C`` and ``gnnsparse._C_cuda``.

Importing ``gnnsparse._C`` (a plain shared library with a minimal module init)
runs its static initialisers, which register the ``torch.ops.gnnsparse.*``
operator schemas and their CPU kernels. ``gnnsparse._C_cuda``, built when the CUDA
toolkit was found (``GNNSPARSE_CUDA``, see setup.py), registers the CUDA kernels of the
same ops; it is loaded right after ``_C`` when present. Loading it needs no GPU.

``GNNSPARSE_EXTENSION=/path/to/lib.so`` loads that file as ``gnnsparse._C`` instead of the
package's own build (used by tools/sanitize.py for the AddressSanitizer/UBSan build, which lives
in build/sanitize/, outside the package). The file must export ``PyInit__C`` (any build of
csrc/ with ``-DGNNSPARSE_PYTHON_MODULE``); no ``_C_cuda`` is loaded next to it unless one lies in
the same folder.
"""

from __future__ import annotations

import importlib
import importlib.util

import torch

__all__ = ["load", "available", "cuda_built", "cuda_error", "library_paths", "CUDA_OPS"]

#: The ops that have a CUDA kernel when ``gnnsparse._C_cuda`` is built.
CUDA_OPS = ("csr_linear", "csr_transpose", "csr_linear_backward_input", "csr_linear_backward", "csr_sddmm",
            "bias_grad", "bsr_linear", "bsr_linear_backward_input", "bsr_sddmm")

_BUILD_HINT = (
    "gnnsparse's C++ extension (gnnsparse._C) is not built or failed to load. Build it from the "
    "repository root with `pip install --no-build-isolation -e .` (torch must be installed first)."
)

_loaded = False
_error: BaseException | None = None
_cuda_loaded = False
_cuda_error: BaseException | None = None


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
            import os

            override = os.environ.get("GNNSPARSE_EXTENSION", "").strip()
            if override:
                _load_file(override)
            else:
                spec = importlib.util.find_spec("gnnsparse._C")
                here = os.path.dirname(os.path.abspath(__file__))
                if spec is not None and spec.origin and os.path.dirname(os.path.abspath(spec.origin)) != here:
                    # e.g. another checkout's editable install answering for a clone without a build
                    raise ImportError(f"gnnsparse._C was found at {spec.origin}, not in this package's folder {here}")
                importlib.import_module("gnnsparse._C")
            if not hasattr(torch.ops.gnnsparse, "csr_linear"):
                raise ImportError("gnnsparse._C loaded but registered no torch.ops.gnnsparse.csr_linear")
        except (ImportError, OSError) as e:  # OSError: unresolved symbols / wrong torch ABI
            _error = e
        else:
            _loaded = True
            _load_cuda()
            return
    raise ImportError(f"{_BUILD_HINT} (original error: {_error})") from _error


def _load_file(path: str) -> None:
    """Load the extension file ``path`` (``GNNSPARSE_EXTENSION``) as ``gnnsparse._C``."""
    import os
    import sys

    if not os.path.isfile(path):
        raise ImportError(f"GNNSPARSE_EXTENSION={path} is not a file")
    spec = importlib.util.spec_from_file_location("gnnsparse._C", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"GNNSPARSE_EXTENSION={path} is not a loadable extension module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["gnnsparse._C"] = module


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


def _load_cuda() -> None:
    """Load ``gnnsparse._C_cuda`` from the folder that ``gnnsparse._C`` came from (never another
    checkout's build that happens to be on the import path)."""
    global _cuda_loaded, _cuda_error
    import importlib.machinery
    import os
    import sys

    folder = os.path.dirname(sys.modules["gnnsparse._C"].__file__)
    path = next((os.path.join(folder, "_C_cuda" + suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES
                 if os.path.exists(os.path.join(folder, "_C_cuda" + suffix))), None)
    if path is None:
        _cuda_error = ImportError(f"gnnsparse._C_cuda is not built next to {sys.modules['gnnsparse._C'].__file__} "
                                  "(no CUDA toolkit at build time, or GNNSPARSE_CUDA=0); rebuild with GNNSPARSE_CUDA=1")
        return
    try:
        spec = importlib.util.spec_from_file_location("gnnsparse._C_cuda", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["gnnsparse._C_cuda"] = module
    except (ImportError, OSError) as e:  # e.g. a CUDA runtime the loader cannot find
        _cuda_error = e
    else:
        _cuda_loaded = True


def library_paths() -> dict:
    """Files of the loaded extensions: ``{"_C": path or None, "_C_cuda": path or None}``."""
    import sys

    return {name: getattr(sys.modules.get(f"gnnsparse.{name}"), "__file__", None) for name in ("_C", "_C_cuda")}


def cuda_built() -> bool:
    """True if the CUDA kernels (``gnnsparse._C_cuda``) are built and loaded (no GPU needed)."""
    return available() and _cuda_loaded


def cuda_error() -> str:
    """Why the CUDA kernels are not available ('' when they are)."""
    if cuda_built():
        return ""
    if not available():
        return str(_error)
    return str(_cuda_error)
