"""The single backend dispatch point for gnnsparse's sparse-weight linear layer.

Weight convention: ``W`` is an ``(out_features, in_features)`` matrix in CSR form,

* ``crow_indices``: int64 ``[out_features + 1]``, ``crow_indices[0] == 0``, non-decreasing,
  ``crow_indices[-1] == nnz``;
* ``col_indices``: int64 ``[nnz]``, each in ``[0, in_features)``, sorted ascending and unique
  within a row (the kernels do not rely on this; duplicates are summed);
* ``values``: ``[nnz]``, float32 or float64, same dtype as the input.

Backends (one dispatch point, :func:`resolve_backend`; override per call, per layer with
``SparseLinear(backend=...)``, or with the environment variable ``GNNSPARSE_BACKEND``):

* ``"cpu"``: the C++/OpenMP kernels of ``gnnsparse._C`` (``torch.ops.gnnsparse.*``), CPU tensors,
  float32/float64. Autograd, fake (meta) kernels and FLOP formulas for these ops are registered
  here, so the ops work with ``torch.compile`` and ``torch.utils.flop_counter.FlopCounterMode``.
  The AVX2+FMA path is picked at run time when the CPU has it, and the AVX-512 tile compute
  of the forward/dX kernel when the CPU has AVX-512F; set the environment variable
  ``GNNSPARSE_CPU_ISA=generic`` to force the portable path (``avx2`` for AVX2 without AVX-512,
  ``avx512`` to require AVX-512, ``auto``/unset for the default). It is read at every call.
  Outputs of 8 MiB or more are written with non-temporal stores.
* ``"cuda"``: the CUDA kernels of ``gnnsparse._C_cuda`` (csrc/cuda), registered for the CUDA
  dispatch key of the same ops; float32/float64/float16/bfloat16 (float32 accumulation for the
  half types); BSR with ``b`` a multiple of 16 on tensor cores (TF32 for float32 only when
  ``torch.backends.cuda.matmul.allow_tf32`` is set). CSR columns must be sorted within each row.
  Index contents are checked on the GPU once per structure (cached by tensor identity and
  version counter). Built when nvcc is found at install time (``GNNSPARSE_CUDA``, see setup.py).
* ``"triton"``: the Triton kernels of ``gnnsparse.kernels`` (kernels/), registered as
  ``torch.ops.gnnsparse_triton.*`` with the same schemas, autograd, fake kernels and FLOP
  formulas; CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1`` (set before triton is
  imported). Structures are validated in torch once per version.
* ``"torch"``: the pure-torch reference (:mod:`gnnsparse.reference`), any device, differentiable
  through ordinary autograd.

Auto choice: CPU tensors -> ``"cpu"`` (``"torch"`` without the extension); CUDA tensors ->
``"cuda"`` if built, else ``"triton"`` if installed, else ``"torch"``; other devices -> ``"torch"``.

FLOP convention (formulas registered with ``torch.utils.flop_counter``): 2 FLOPs per
multiply-add: ``csr_linear`` ``2·N·nnz``, ``csr_linear_backward_input`` ``2·N·nnz``,
``csr_sddmm`` ``2·N·nnz``. Bias additions and the bias gradient (a column sum) count 0, as
``FlopCounterMode`` counts dense ``addmm`` and the dense bias gradient.

Determinism: on the ``"cpu"`` backend every result is bit-identical for any number of threads
(reductions over nodes use chunks whose size depends on N only, reduced in a fixed order). The
``"cuda"`` and ``"triton"`` weight gradients use no atomics: per-split partial sums reduced in a
fixed order, reproducible on a given GPU (the split count depends on its SM count, and Triton's on
the autotuned config).

Block-sparse weights (:func:`bsr_linear`): ``W`` in BSR with square ``b x b`` blocks
(``b`` divides both dims; fast paths for b = 4, 8, 16, 32): ``crow_indices`` int64
``[out_features / b + 1]``, ``col_indices`` int64 ``[nnzb]`` (block columns), ``values``
``[nnzb, b, b]`` with ``values[k, i, j] = W[br·b + i, col[k]·b + j]``. Ops ``bsr_linear``,
``bsr_linear_backward_input`` and ``bsr_sddmm`` (``[nnzb, b, b]`` weight gradient), each
``2·N·nnzb·b²`` FLOPs; same backends, autograd, fake kernels and determinism as the CSR ops.
With ``GNNSPARSE_CPU_ISA`` unset/``auto`` the BSR forward and dX kernels use AVX-512 where the
CPU has it (b = 16, 32 float; 8, 16, 32 double); ``GNNSPARSE_CPU_ISA=avx2`` keeps them on AVX2.
"""

from __future__ import annotations

import contextlib
import os
import torch

from . import _ext, reference

__all__ = [
    "csr_linear",
    "csr_transpose",
    "bsr_linear",
    "bsr_linear_flops",
    "resolve_backend",
    "check_backend",
    "csr_linear_flops",
    "VALID_BACKENDS",
    "set_check_finite",
    "check_finite_enabled",
    "check_finite",
    "CHECK_FINITE_ENV",
]

#: Backend names: the C++ kernels on CPU tensors, the CUDA kernels, the Triton kernels, and the
#: pure-torch reference.
VALID_BACKENDS = ("cpu", "cuda", "triton", "torch")

def csr_linear_flops(n: int, nnz: int, out_features: int, bias: bool) -> int:
    """FLOPs of one ``csr_linear`` forward: ``2·n·nnz`` (one multiply-add per stored weight and row).

    The bias addition is not counted, matching how ``FlopCounterMode`` counts dense ``addmm``
    (``2·M·N·K`` only), so sparse and dense counts compare like for like.
    """
    return 2 * n * nnz


# ---------------------------------------------------------------------------------------------
# Backend selection: the one place that maps (device, override) to kernels
def check_backend(backend: str) -> str:
    """Validate a backend name and return it.

    Raises:
        ValueError: not one of :data:`VALID_BACKENDS`.
    """
    if backend in VALID_BACKENDS:
        return backend
    valid = ", ".join(repr(b) for b in VALID_BACKENDS)
    raise ValueError(f"unknown backend {backend!r}; valid backends: {valid}")


def triton_interpreting() -> bool:
    """True when Triton kernels run in Triton's CPU interpreter (``TRITON_INTERPRET`` set to 1,
    true, on or yes, as triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


def triton_available() -> bool:
    """True if the ``triton`` package can be imported."""
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def resolve_backend(backend: str | None = None, device: torch.device | str | None = None) -> str:
    """Pick the backend for tensors on ``device``.

    ``backend`` if given (a layer's ``backend=`` wins over the environment), else the environment
    variable ``GNNSPARSE_BACKEND`` if set and non-empty (case-insensitive), else by device
    (``None`` means CPU):

    * CPU: ``"cpu"`` when the C++ extension is built, else ``"torch"``;
    * CUDA: ``"cuda"`` when the CUDA kernels are built (``gnnsparse._C_cuda``), else
      ``"triton"`` when triton is installed, else ``"torch"``;
    * anything else (``meta``, ``mps``...): ``"torch"``.

    Whether the chosen backend can run on the device is checked when an op runs
    (:func:`check_backend_device`).

    Raises:
        ValueError: invalid backend name (see :func:`check_backend`).
    """
    if backend is None:
        env = os.environ.get("GNNSPARSE_BACKEND", "").strip().lower()
        if env:
            if env not in VALID_BACKENDS:
                valid = ", ".join(repr(b) for b in VALID_BACKENDS)
                raise ValueError(f"environment variable GNNSPARSE_BACKEND={env!r} is not a backend; valid "
                                 f"backends: {valid} (or unset it to choose by device)")
            return env
    if backend is not None:
        return check_backend(backend)
    dev_type = "cpu" if device is None else torch.device(device).type
    if dev_type == "cpu" and _ext.available():
        return "cpu"
    if dev_type == "cuda":
        if _ext.cuda_built():
            return "cuda"
        if triton_available():
            return "triton"
    return "torch"


def check_backend_device(name: str, device: torch.device, dtype: torch.dtype | None = None) -> None:
    """Raise a clear error if backend ``name`` cannot run on ``device`` (and ``dtype``).

    * ``"cpu"``: CPU tensors, float32/float64, the C++ extension built;
    * ``"cuda"``: CUDA tensors, the CUDA kernels built (``GNNSPARSE_CUDA``; see setup.py);
    * ``"triton"``: triton installed; CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``
      (set before triton is imported); float32/float64/float16/bfloat16;
    * ``"torch"``: any device and dtype.

    Raises:
        RuntimeError: the device or dtype does not fit the backend.
        ImportError: the backend's extension or package is missing (message says how to get it).
    """
    dev = torch.device(device)
    if name == "cpu":
        if dev.type != "cpu":
            raise RuntimeError(f"backend 'cpu' runs on CPU tensors, got tensors on {dev}; use backend='cuda', "
                               f"'triton' or 'torch' (or leave it unset to choose by device)")
        if dtype is not None and dtype not in (torch.float32, torch.float64):
            raise RuntimeError(f"backend 'cpu' supports float32 and float64, got {dtype}; use backend='torch' "
                               f"for other dtypes on CPU")
        _ext.load()
    elif name == "cuda":
        if dev.type != "cuda":
            raise RuntimeError(f"backend 'cuda' runs on CUDA tensors, got tensors on {dev}")
        if not _ext.cuda_built():
            raise ImportError(f"backend 'cuda': gnnsparse's CUDA kernels are not available ({_ext.cuda_error()})")
    elif name == "triton":
        if not triton_available():
            raise ImportError("backend 'triton' needs the triton package (pip install triton)")
        if dev.type != "cuda" and not (dev.type == "cpu" and triton_interpreting()):
            raise RuntimeError(f"backend 'triton' runs on CUDA tensors, or on CPU tensors with TRITON_INTERPRET=1 "
                               f"set before triton is imported; got tensors on {dev}")
        from .kernels import _common

        if triton_interpreting() != _common.INTERPRET:
            raise RuntimeError(
                f"backend 'triton': TRITON_INTERPRET is now {os.environ.get('TRITON_INTERPRET')!r} but was "
                f"{'1' if _common.INTERPRET else 'unset'} when the Triton kernels were imported (it is read once, "
                f"at import): set it before importing gnnsparse (torch's FLOP counter imports triton too)")
        if dev.type == "cpu" and dtype == torch.bfloat16:
            raise RuntimeError("backend 'triton' on CPU tensors (Triton's interpreter) computes bfloat16 wrongly; "
                               "use float16/float32/float64 there, or run on a GPU")
        if dtype is not None and dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            raise RuntimeError(f"backend 'triton' supports float32, float64, float16 and bfloat16, got {dtype}")


def op_namespace(name: str):
    """The ``torch.ops`` namespace that runs backend ``name`` (``"cpu"``/``"cuda"``: the C++ ops
    ``torch.ops.gnnsparse``, dispatched by device; ``"triton"``: ``torch.ops.gnnsparse_triton``,
    registered on first use). Not for ``"torch"``."""
    if name == "triton":
        return _triton_ops()
    _ext.load()
    return torch.ops.gnnsparse


# ---------------------------------------------------------------------------------------------
# Triton backend: the Triton kernels (gnnsparse.kernels, from kernels/) registered as custom ops
# in namespace gnnsparse_triton with the C++ ops' schemas, so that the same fake kernels,
# autograd formulas and FLOP formulas apply (registered by _register/_register_bsr below).
_triton_registered = False
_triton_lib = None
_triton_error: BaseException | None = None


def _triton_ops():
    global _triton_registered, _triton_lib
    if _triton_registered:
        return torch.ops.gnnsparse_triton
    if _triton_error is not None:
        raise ImportError(f"backend 'triton': registering the Triton kernels failed: {_triton_error}") \
            from _triton_error
    _ext.load()  # the schemas are read from the C++ ops
    from .kernels import bsr_linear as tk_bsr
    from .kernels import csr_linear as tk_csr
    from .kernels import sddmm as tk_sddmm

    lib = torch.library.Library("gnnsparse_triton", "DEF")
    names = ("csr_linear", "csr_transpose", "csr_linear_backward_input", "csr_linear_backward", "csr_sddmm",
             "bias_grad", "bsr_linear", "bsr_linear_backward_input", "bsr_sddmm")
    for name in names:
        schema = str(getattr(torch.ops.gnnsparse, name).default._schema)
        lib.define(schema.split("::", 1)[1])

    # Argument checks with the C++ ops' wording (the kernels' own checks name their own op).
    def two_d(op, name, t):
        if t.dim() != 2:
            raise RuntimeError(f"{op}: expected {name} to be 2-D [N, features], got shape {tuple(t.shape)}")

    def features(op, name, n):
        if n < 0:
            raise RuntimeError(f"{op}: expected {name} >= 0, got {n}")

    def pair(op, grad, x):
        two_d(op, "grad_out", grad)
        two_d(op, "x", x)
        if grad.shape[0] != x.shape[0]:
            raise RuntimeError(f"{op}: x has {x.shape[0]} rows but grad_out has {grad.shape[0]}")
        if grad.dtype != x.dtype:
            raise RuntimeError(f"{op}: x dtype {x.dtype} differs from grad_out dtype {grad.dtype}")

    def csr_values(op, values, dtype, col):
        if values.dim() != 1 or values.shape[0] != col.shape[0]:
            raise RuntimeError(f"{op}: values must have shape [{col.shape[0]}] (one per column index), got "
                               f"{tuple(values.shape)}")
        if values.dtype != dtype:
            raise RuntimeError(f"{op}: values dtype {values.dtype} differs from the input dtype {dtype}")

    def block_values(op, values, dtype, col) -> int:
        if values.dim() != 3 or values.shape[1] != values.shape[2] or values.shape[1] < 1 \
                or values.shape[0] != col.shape[0]:
            raise RuntimeError(f"{op}: values must have shape [nnzb, b, b] = [{col.shape[0]}, b, b] with b >= 1, got "
                               f"{tuple(values.shape)}")
        if values.dtype != dtype:
            raise RuntimeError(f"{op}: values dtype {values.dtype} differs from the input dtype {dtype}")
        return values.shape[1]

    def transpose_args(op, t_crow, t_col, t_perm):
        given = sum(t is not None for t in (t_crow, t_col, t_perm))
        if given not in (0, 3):
            raise RuntimeError(f"{op}: give all of t_crow, t_col, t_perm or none")
        for name, t in (("t_crow", t_crow), ("t_col", t_col), ("t_perm", t_perm)):
            if t is not None and (t.dtype != torch.int64 or t.dim() != 1):
                raise RuntimeError(f"{op}: {name} must be a 1-D int64 tensor, got {t.dtype} of shape {tuple(t.shape)}")
        return given == 3

    def csr_linear_impl(x, crow, col, values, bias, out_features, t_crow=None, t_col=None, t_perm=None):
        op = "csr_linear"
        two_d(op, "x", x)
        features(op, "out_features", out_features)
        csr_values(op, values, x.dtype, col)
        validate_structure(op, crow, col, (out_features, x.shape[1]))
        if transpose_args(op, t_crow, t_col, t_perm):
            validate_transpose(op, crow, col, t_crow, t_col, t_perm, x.shape[1])
        return tk_csr.csr_linear(x, crow, col, values, bias, out_features)

    def csr_transpose_impl(crow, col, in_features):
        features("csr_transpose", "in_features", in_features)
        if crow.dim() != 1 or crow.shape[0] < 1:
            raise RuntimeError(f"csr_transpose: expected crow_indices of shape [out_features + 1], got "
                               f"{tuple(crow.shape)}")
        validate_structure("csr_transpose", crow, col, (crow.shape[0] - 1, in_features))
        return _torch_transpose(crow, col, in_features)

    def csr_linear_backward_input_impl(grad, crow, col, values, in_features):
        op = "csr_linear_backward_input"
        two_d(op, "grad_out", grad)
        features(op, "in_features", in_features)
        csr_values(op, values, grad.dtype, col)
        validate_structure(op, crow, col, (grad.shape[1], in_features))
        t_crow, t_col, t_perm = _torch_transpose(crow, col, in_features)
        return tk_csr.csr_linear(grad, t_crow, t_col, values[t_perm], None, in_features)

    def csr_linear_backward_impl(grad, x, crow, col, values, t_crow, t_col, t_perm, need_x, need_v, need_b):
        op = "csr_linear_backward"
        pair(op, grad, x)
        csr_values(op, values, x.dtype, col)
        validate_structure(op, crow, col, (grad.shape[1], x.shape[1]))
        transpose_args(op, t_crow, t_col, t_perm)
        validate_transpose(op, crow, col, t_crow, t_col, t_perm, x.shape[1])

        def none():  # outputs not asked for: [0], one tensor each (outputs must not alias)
            return grad.new_empty((0,))

        dx = tk_csr.csr_linear(grad, t_crow, t_col, values[t_perm], None, x.shape[1]) if need_x else none()
        dv = tk_sddmm.csr_sddmm(grad, x, crow, col) if need_v else none()
        db = grad.sum(0) if need_b else none()
        return dx, dv, db

    def csr_sddmm_impl(grad, x, crow, col):
        pair("csr_sddmm", grad, x)
        validate_structure("csr_sddmm", crow, col, (grad.shape[1], x.shape[1]))
        return tk_sddmm.csr_sddmm(grad, x, crow, col)

    def bias_grad_impl(grad):
        two_d("bias_grad", "grad_out", grad)
        if not grad.dtype.is_floating_point:
            raise RuntimeError(f"bias_grad: expected a floating grad_out, got {grad.dtype}")
        return grad.sum(0)

    def bsr_check(op, crow, col, b, out_f, in_f):
        if b < 1:
            raise RuntimeError(f"{op}: blocksize must be >= 1, got {b}")
        features(op, "out_features", out_f)
        features(op, "in_features", in_f)
        if out_f % b or in_f % b:
            raise RuntimeError(f"{op}: the weight shape ({out_f}, {in_f}) is not divisible by the blocksize {b}")
        validate_structure(op, crow, col, (out_f // b, in_f // b), block=True)

    def bsr_linear_impl(x, crow, col, values, bias, out_features):
        two_d("bsr_linear", "x", x)
        b = block_values("bsr_linear", values, x.dtype, col)
        bsr_check("bsr_linear", crow, col, b, out_features, x.shape[1])
        return tk_bsr.bsr_linear(x, crow, col, values, bias, out_features)

    def bsr_linear_backward_input_impl(grad, crow, col, values, in_features):
        op = "bsr_linear_backward_input"
        two_d(op, "grad_out", grad)
        b = block_values(op, values, grad.dtype, col)
        bsr_check(op, crow, col, b, grad.shape[1], in_features)
        return tk_bsr.bsr_linear_backward_input(grad, crow, col, values, in_features)

    def bsr_sddmm_impl(grad, x, crow, col, blocksize):
        pair("bsr_sddmm", grad, x)
        bsr_check("bsr_sddmm", crow, col, int(blocksize), grad.shape[1], x.shape[1])
        return tk_bsr.bsr_sddmm(grad, x, crow, col, blocksize)

    impls = dict(csr_linear=csr_linear_impl, csr_transpose=csr_transpose_impl,
                 csr_linear_backward_input=csr_linear_backward_input_impl,
                 csr_linear_backward=csr_linear_backward_impl, csr_sddmm=csr_sddmm_impl, bias_grad=bias_grad_impl,
                 bsr_linear=bsr_linear_impl, bsr_linear_backward_input=bsr_linear_backward_input_impl,
                 bsr_sddmm=bsr_sddmm_impl)
    for name, fn in impls.items():
        for key in ("CUDA", "CPU"):  # CPU: Triton's interpreter (checked in check_backend_device)
            lib.impl(name, fn, key)
    _triton_lib = lib  # keep the registrations alive
    _register("gnnsparse_triton")
    _register_bsr("gnnsparse_triton")
    _triton_registered = True
    return torch.ops.gnnsparse_triton


# ---------------------------------------------------------------------------------------------
# Structure validation for the Python-side backends (the C++ ops check in C++), cached by the
# identity and version counter of the index tensors, so a layer pays it once per structure.
_validated: dict = {}


def _cache_key(kind, tensors, dims):
    # version counter, and storage address and geometry (``t.data = other`` keeps the version)
    return (kind, dims) + tuple((id(t), t._version, t.data_ptr(), tuple(t.shape), t.stride()) for t in tensors)


def _cached(kind, tensors, dims, check) -> None:
    import weakref

    if torch.compiler.is_compiling() or any(t.device.type == "meta" for t in tensors):
        return
    # Inference tensors have no version counter; CPU tensors (Triton's interpreter) are cheap to
    # check and writes through .data / numpy views bypass version counters: check every call.
    if any(t.is_inference() or t.device.type == "cpu" for t in tensors):
        check()
        return
    key = _cache_key(kind, tensors, dims)
    hit = _validated.get(key)
    if hit is not None and all(r() is t for r, t in zip(hit, tensors)):
        return
    check()
    if len(_validated) > 256:
        for k in [k for k, refs in _validated.items() if any(r() is None for r in refs)]:
            del _validated[k]
        if len(_validated) > 256:
            _validated.clear()
    _validated[key] = tuple(weakref.ref(t) for t in tensors)


def validate_structure(op: str, crow: torch.Tensor, col: torch.Tensor, shape: tuple[int, int],
                       block: bool = False) -> None:
    """Check a CSR structure (or a BSR block structure, ``shape`` in blocks) once per version (every
    call for CPU and inference tensors).

    Raises:
        RuntimeError: invalid structure (the message of :func:`gnnsparse.formats.validate_csr`).
    """
    from .formats import validate_csr

    shape = (int(shape[0]), int(shape[1]))

    def check():
        try:
            validate_csr(crow, col, None, shape, name=op, check_sorted=False)
        except ValueError as e:  # the same exception type as the C++ ops' checks
            raise RuntimeError(str(e)) from None

    _cached("bsr" if block else "csr", (crow, col), shape, check)


def validate_transpose(op: str, crow, col, t_crow, t_col, t_perm, in_features: int) -> None:
    """Check that ``(t_crow, t_col, t_perm)`` is the transpose of the CSR ``(crow, col)``.

    Raises:
        RuntimeError: it is not (a stale cached transpose).
    """
    def check():
        nnz = col.numel()
        ok = (t_crow.numel() == in_features + 1 and t_col.numel() == nnz and t_perm.numel() == nnz)
        if ok and nnz:
            rows = reference._row_indices(crow, nnz)
            t_rows = reference._row_indices(t_crow, nnz) if bool((t_crow[1:] >= t_crow[:-1]).all()) else None
            ok = (t_rows is not None and int(t_crow[0]) == 0 and int(t_crow[-1]) == nnz
                  and bool(((t_perm >= 0) & (t_perm < nnz)).all())
                  and bool((torch.bincount(t_perm, minlength=nnz) == 1).all())
                  and bool((col[t_perm] == t_rows).all()) and bool((rows[t_perm] == t_col).all()))
        if not ok:
            raise RuntimeError(f"{op}: (t_crow, t_col, t_perm) is not the transpose of W (stale cached transpose? "
                               f"recompute it with csr_transpose after changing the structure)")

    _cached("csr_t", (crow, col, t_crow, t_col, t_perm), (int(in_features),), check)


# ---------------------------------------------------------------------------------------------
# Argument checks of the public ops (cheap: no data is read), the same on every backend
def _check_tensors(op: str, x, **others) -> None:
    """``x`` and the other tensor arguments are tensors on ``x``'s device.

    Raises:
        TypeError: an argument is not a ``torch.Tensor`` (``None`` allowed for ``bias``).
        RuntimeError: tensors on different devices (all devices named).
    """
    for name, t in (("x", x), *others.items()):
        if t is None and name == "bias":
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: expected {name} to be a torch.Tensor, got {type(t).__name__}")
    devs = {"x": x.device, **{k: t.device for k, t in others.items() if t is not None}}
    if len(set(devs.values())) > 1:
        raise RuntimeError(f"{op}: all tensors must be on one device, got "
                           + ", ".join(f"{k}={d}" for k, d in devs.items()))


def _check_reference_args(op: str, x, values, bias, out_features: int, values_dim: int) -> None:
    """dtype/shape rules of the kernel backends, for the ``"torch"`` backend (whose dense matmul
    would otherwise fail with messages that do not name the argument, or broadcast a wrong bias).

    Raises:
        RuntimeError: ``x`` not floating, ``values``/``bias`` of another dtype than ``x``, ``values``
            not ``values_dim``-D, ``bias`` not ``[out_features]``.
    """
    if not x.dtype.is_floating_point:
        raise RuntimeError(f"{op}: expected x to have a floating dtype, got {x.dtype}")
    if values.dim() != values_dim:
        raise RuntimeError(f"{op}: expected values to be {values_dim}-D, got shape {tuple(values.shape)}")
    if values.dtype != x.dtype:
        raise RuntimeError(f"{op}: expected values to have dtype {x.dtype} (same as x), got {values.dtype}")
    if bias is not None:
        if bias.dtype != x.dtype:
            raise RuntimeError(f"{op}: expected bias to have dtype {x.dtype} (same as x), got {bias.dtype}")
        if bias.dim() != 1 or bias.shape[0] != out_features:
            raise RuntimeError(f"{op}: expected bias to have shape [out_features] = [{out_features}], got "
                               f"{tuple(bias.shape)}")


# ---------------------------------------------------------------------------------------------
# Optional check for NaN/Inf in the inputs of the forward ops (off by default)
#: Environment variable that turns the non-finite check on (``1``/``true``/``on``/``yes``) or off
#: (``0``/``false``/``off``/``no``/unset) when :func:`set_check_finite` has not set it.
CHECK_FINITE_ENV = "GNNSPARSE_CHECK_FINITE"
_check_finite_override: bool | None = None


def set_check_finite(enabled: bool | None) -> bool | None:
    """Turn the NaN/Inf check of the forward ops on (``True``) or off (``False``) for this process;
    ``None`` goes back to the environment variable :data:`CHECK_FINITE_ENV`. Returns the previous
    setting (``True``/``False``/``None``).

    With the check on, :func:`csr_linear`, :func:`bsr_linear` and ``SparseLinear`` (every
    executor) raise ``ValueError`` naming the tensor (``x``, ``values`` or ``bias``), the index and
    the value of its first non-finite entry, before computing. It costs one pass over each tensor;
    off (the default), it costs one dictionary lookup per call and NaN/Inf propagate (see
    docs/bad_input.md). It is skipped for meta tensors and inside ``torch.compile`` traces.

    Raises:
        TypeError: ``enabled`` is not a bool or None.
    """
    global _check_finite_override
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"set_check_finite expects True, False or None, got {type(enabled).__name__}")
    previous = _check_finite_override
    _check_finite_override = enabled
    return previous


def check_finite_enabled() -> bool:
    """Whether the NaN/Inf check is on: the :func:`set_check_finite` setting, else the environment
    variable :data:`CHECK_FINITE_ENV` (read at every call).

    Raises:
        ValueError: the environment variable holds something other than a boolean word.
    """
    if _check_finite_override is not None:
        return _check_finite_override
    env = os.environ.get(CHECK_FINITE_ENV, "").strip().lower()
    if env in ("", "0", "false", "off", "no"):
        return False
    if env in ("1", "true", "on", "yes"):
        return True
    raise ValueError(f"environment variable {CHECK_FINITE_ENV}={env!r} must be 1/true/on/yes or 0/false/off/no")


@contextlib.contextmanager
def check_finite(enabled: bool = True):
    """Context manager: the NaN/Inf check on (or off) inside the block, restored after it.

    Example::

        with gnnsparse.ops.check_finite():
            y = layer(x)   # ValueError if x, the layer's values or bias hold NaN/Inf
    """
    previous = set_check_finite(enabled)
    try:
        yield
    finally:
        set_check_finite(previous)


def _raise_if_not_finite(op: str, **tensors) -> None:
    """With the check on: ``ValueError`` for the first tensor (in argument order) holding NaN/Inf,
    naming it, the index and the value of its first bad entry (row-major order)."""
    if not check_finite_enabled() or torch.compiler.is_compiling():
        return
    for name, t in tensors.items():
        if t is None or t.device.type == "meta" or not (t.dtype.is_floating_point or t.dtype.is_complex):
            continue
        bad = ~torch.isfinite(t.detach())
        if bool(bad.any()):
            index = tuple(int(i) for i in torch.nonzero(bad)[0])
            value = t.detach()[index].item()
            raise ValueError(f"{op}: {name} holds a non-finite value {value} at index {list(index)} "
                             f"(shape {list(t.shape)}); the NaN/Inf check is on ({CHECK_FINITE_ENV} / "
                             f"gnnsparse.ops.set_check_finite)")


# ---------------------------------------------------------------------------------------------
# Public op
def csr_linear(x: torch.Tensor, crow_indices: torch.Tensor, col_indices: torch.Tensor,
               values: torch.Tensor, bias: torch.Tensor | None, out_features: int,
               backend: str | None = None, *, in_features: int | None = None,
               transpose: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``y = x · Wᵀ + bias`` with ``W`` ``(out_features, in_features)`` in CSR.

    Args:
        x: ``[*, in_features]`` float32/float64 (``"cuda"``, ``"triton"``, ``"torch"``: also
            float16/bfloat16; any leading dims, any strides).
        crow_indices: int64 ``[out_features + 1]``.
        col_indices: int64 ``[nnz]`` (sorted within each row on the ``"cuda"`` backend).
        values: ``[nnz]``, same dtype as ``x``.
        bias: ``[out_features]`` (same dtype) or ``None``.
        out_features: number of rows of ``W``.
        backend: ``"cpu"``, ``"cuda"``, ``"triton"``, ``"torch"`` or ``None`` (see
            :func:`resolve_backend`; resolved for ``x.device``).
        in_features: optional; if given, ``x.shape[-1]`` is checked against it.
        transpose: optional cached ``(t_crow, t_col, t_perm)`` of ``W`` from :func:`csr_transpose`
            (kernel backends): the backward then computes ``dX = dY·W`` as the forward kernel
            over ``Wᵀ`` without transposing per call. It is checked against ``W`` (O(nnz); on
            the GPU once per structure); a stale one raises ``RuntimeError``. Ignored by the
            ``"torch"`` backend.

    Returns:
        ``[*, out_features]``, dtype of ``x``. Differentiable w.r.t. ``x``, ``values`` and
        ``bias``; on the kernel backends the backward runs ``csr_linear_backward_input``
        (dX), ``csr_sddmm`` (dvalues) and ``bias_grad`` only for inputs that need a gradient
        (one fused ``csr_linear_backward`` call when ``transpose`` is given).

    FLOPs (the formula registered for ``FlopCounterMode``): ``2·N·nnz``, ``N`` the number of
    rows of ``x`` flattened to 2-D; the bias addition is not counted (as for dense ``addmm``).

    Raises:
        RuntimeError: ``x`` is 0-D or its last dim differs from ``in_features``; the backend
            does not fit the device or dtype (:func:`check_backend_device`); from the kernel
            backends' ops: wrong dtype/device/shape of an argument, invalid CSR (``crow_indices``
            not monotone, wrong length or not ending at nnz; ``col_indices`` out of range).
        ValueError: invalid backend name; on the ``"torch"`` backend an invalid CSR triple; with
            the NaN/Inf check on (:func:`set_check_finite`), a non-finite entry of ``x``,
            ``values`` or ``bias`` (tensor and index named).
        TypeError: an argument that must be a tensor is not one.
        ImportError: the backend's extension or package is missing.

    Mixed devices raise ``RuntimeError`` naming every tensor's device. Non-finite inputs with
    the check off: see docs/bad_input.md (the kernels skip structural zeros, so a NaN in
    ``x[n, j]`` reaches only the outputs whose row stores column ``j``; the ``"torch"`` backend
    multiplies a dense weight, where ``0·NaN = NaN`` reaches every output of row ``n``).
    """
    _check_tensors("csr_linear", x, crow_indices=crow_indices, col_indices=col_indices, values=values, bias=bias)
    if x.dim() == 0:
        raise RuntimeError("csr_linear: expected x of shape [*, in_features], got a 0-D tensor")
    _raise_if_not_finite("csr_linear", x=x, values=values, bias=bias)
    if in_features is not None and x.shape[-1] != in_features:
        raise RuntimeError(
            f"csr_linear: x has shape {tuple(x.shape)} but W has shape "
            f"({out_features}, {in_features}): the last dim of x must equal in_features = {in_features}")
    x2 = x if x.dim() == 2 else (x.flatten(0, -2) if x.dim() > 2 else x.unsqueeze(0))
    name = resolve_backend(backend, x.device)
    if name != "torch":
        check_backend_device(name, x2.device, x2.dtype)
        ns = op_namespace(name)
        if transpose is None:
            y = ns.csr_linear(x2, crow_indices, col_indices, values, bias, out_features)
        else:
            t_crow, t_col, t_perm = transpose
            y = ns.csr_linear(x2, crow_indices, col_indices, values, bias, out_features, t_crow, t_col, t_perm)
    else:
        # the reference does not bounds-check its indexing (a -1 column would wrap around)
        from .formats import validate_csr

        _check_reference_args("csr_linear", x2, values, bias, int(out_features), 1)
        validate_csr(crow_indices, col_indices, values, (int(out_features), int(x2.shape[-1])),
                     name="csr_linear", check_sorted=False)
        y = reference.csr_linear(x2, crow_indices, col_indices, values, bias, out_features)
    if x.dim() == 2:
        return y
    return y.unflatten(0, x.shape[:-1]) if x.dim() > 2 else y.squeeze(0)


def csr_transpose(crow_indices: torch.Tensor, col_indices: torch.Tensor, in_features: int):
    """Structure of ``Wᵀ`` for a CSR ``W`` ``(out_features, in_features)``.

    Args:
        crow_indices: int64 ``[out_features + 1]``; col_indices: int64 ``[nnz]``.
        in_features: number of columns of ``W``.

    Returns:
        ``(t_crow, t_col, t_perm)``: int64 ``[in_features + 1]``, ``[nnz]`` (row indices of
        ``W``) and ``[nnz]`` with ``Wᵀ`` entry ``q`` equal to ``W`` entry ``t_perm[q]``, so the
        transposed values are ``values[t_perm]``. Computed by the C++ op (counting sort,
        O(nnz + out + in)) when the extension is built, else in torch.

    Raises:
        RuntimeError: invalid CSR (from the C++ checks); ValueError without the extension.
    """
    dev = crow_indices.device.type
    if (dev == "cpu" and _ext.available()) or (dev == "cuda" and _ext.cuda_built()):
        _ext.load()
        return torch.ops.gnnsparse.csr_transpose(crow_indices, col_indices, in_features)
    from .formats import validate_csr

    rows = crow_indices.numel() - 1
    validate_csr(crow_indices, col_indices, None, (rows, int(in_features)), name="csr_transpose",
                 check_sorted=False)
    return _torch_transpose(crow_indices, col_indices, in_features)


def _torch_transpose(crow_indices: torch.Tensor, col_indices: torch.Tensor, in_features: int):
    """:func:`csr_transpose` in torch ops (no validation), for devices without the C++ op."""
    rows = crow_indices.numel() - 1
    row = reference._row_indices(crow_indices, col_indices.numel())
    perm = torch.argsort(col_indices * max(rows, 1) + row, stable=True)
    counts = torch.bincount(col_indices, minlength=int(in_features))
    t_crow = torch.zeros(int(in_features) + 1, dtype=torch.int64, device=crow_indices.device)
    t_crow[1:] = torch.cumsum(counts, 0)
    return t_crow, row[perm], perm


# =============================================================================================
# Block-sparse (BSR) weights: public op (registrations in _register_bsr below)
def bsr_linear_flops(n: int, nnzb: int, blocksize: int) -> int:
    """FLOPs of one ``bsr_linear`` forward (and of each of its backward ops): ``2·n·nnzb·b²``.

    The bias addition is not counted (as for dense ``addmm``).
    """
    return 2 * n * nnzb * blocksize * blocksize


def bsr_linear(x: torch.Tensor, crow_indices: torch.Tensor, col_indices: torch.Tensor,
               values: torch.Tensor, bias: torch.Tensor | None, out_features: int,
               backend: str | None = None, *, in_features: int | None = None) -> torch.Tensor:
    """``y = x · Wᵀ + bias`` with ``W`` ``(out_features, in_features)`` in BSR (``b x b`` blocks).

    Args:
        x: ``[*, in_features]`` float32/float64 (``"cuda"``, ``"triton"``, ``"torch"``: also
            float16/bfloat16; any leading dims, any strides).
        crow_indices: int64 ``[out_features / b + 1]``.
        col_indices: int64 ``[nnzb]`` (block-column indices).
        values: ``[nnzb, b, b]``, same dtype as ``x``; ``values[k, i, j] = W[br·b + i, col[k]·b + j]``.
        bias: ``[out_features]`` (same dtype) or ``None``.
        out_features: number of rows of ``W`` (divisible by ``b``).
        backend: ``"cpu"``, ``"cuda"``, ``"triton"``, ``"torch"`` or ``None`` (see
            :func:`resolve_backend`; resolved for ``x.device``).
        in_features: optional; if given, ``x.shape[-1]`` is checked against it.

    Returns:
        ``[*, out_features]``, dtype of ``x``. Differentiable w.r.t. ``x``, ``values`` and
        ``bias``; on the ``"cpu"`` backend the backward runs ``bsr_linear_backward_input``
        (dX), ``bsr_sddmm`` (dvalues) and ``bias_grad`` only for inputs that need a gradient.

    FLOPs (registered for ``FlopCounterMode``): ``2·N·nnzb·b²``, ``N`` the number of rows of
    ``x`` flattened to 2-D; the bias addition is not counted.

    Raises:
        RuntimeError: ``x`` is 0-D or its last dim differs from ``in_features``; from the C++
            ops: wrong dtype/device/shape of an argument, ``values`` not ``[nnzb, b, b]``,
            dims not divisible by ``b``, invalid block structure (``crow_indices`` not
            monotone, wrong length or not ending at nnzb; ``col_indices`` out of range).
        ValueError: invalid backend name; on the ``"torch"`` backend an invalid BSR triple; with
            the NaN/Inf check on (:func:`set_check_finite`), a non-finite entry of ``x``,
            ``values`` or ``bias`` (tensor and index named).
        TypeError: an argument that must be a tensor is not one.
        ImportError: the backend's extension or package is missing.

    Mixed devices raise ``RuntimeError`` naming every tensor's device. Stored blocks are dense:
    a NaN in ``x[n, j]`` reaches every output of the block rows that store block column
    ``j // b`` (zeros inside a stored block are multiplied).
    """
    _check_tensors("bsr_linear", x, crow_indices=crow_indices, col_indices=col_indices, values=values, bias=bias)
    if x.dim() == 0:
        raise RuntimeError("bsr_linear: expected x of shape [*, in_features], got a 0-D tensor")
    _raise_if_not_finite("bsr_linear", x=x, values=values, bias=bias)
    if in_features is not None and x.shape[-1] != in_features:
        raise RuntimeError(
            f"bsr_linear: x has shape {tuple(x.shape)} but W has shape "
            f"({out_features}, {in_features}): the last dim of x must equal in_features = {in_features}")
    x2 = x if x.dim() == 2 else (x.flatten(0, -2) if x.dim() > 2 else x.unsqueeze(0))
    name = resolve_backend(backend, x.device)
    if name != "torch":
        check_backend_device(name, x2.device, x2.dtype)
        y = op_namespace(name).bsr_linear(x2, crow_indices, col_indices, values, bias, out_features)
    else:
        # the reference does not bounds-check its indexing (a -1 column would wrap around)
        from .formats import validate_bsr

        _check_reference_args("bsr_linear", x2, values, bias, int(out_features), 3)
        validate_bsr(crow_indices, col_indices, values, (int(out_features), int(x2.shape[-1])),
                     name="bsr_linear", check_sorted=False)
        y = reference.bsr_linear(x2, crow_indices, col_indices, values, bias, out_features)
    if x.dim() == 2:
        return y
    return y.unflatten(0, x.shape[:-1]) if x.dim() > 2 else y.squeeze(0)


# ---------------------------------------------------------------------------------------------
# Registrations for the C++ ops (fake kernels, autograd, FLOP formulas).
def _same_device(name, **tensors):
    """Fake-kernel check: every given tensor on one device (a mix raises, as in the kernels)."""
    devs = {k: t.device for k, t in tensors.items() if t is not None}
    first = next(iter(devs.values()))
    torch._check(all(d == first for d in devs.values()),
                 lambda: f"{name}: all tensors must be on one device, got "
                         + ", ".join(f"{k}={d}" for k, d in devs.items()))


def _register(ns: str = "gnnsparse") -> None:
    """Fake kernels, autograd and FLOP formulas of the CSR ops in namespace ``ns`` (the C++ ops
    in ``gnnsparse``; the Triton ops in ``gnnsparse_triton`` have the same schemas)."""
    from torch.utils.flop_counter import register_flop_formula

    ops = getattr(torch.ops, ns)

    # ---- fake (meta) kernels: the same shape/dtype/device rules as the C++ checks, so that a
    # mix of meta and CPU tensors (e.g. a layer moved to "meta") raises instead of returning
    # uninitialized memory, and torch.compile traces reject what eager would reject.
    def _csr_fake_checks(name, crow, col, values, dtype, rows):
        torch._check(crow.dtype == torch.int64 and col.dtype == torch.int64,
                     lambda: f"{name}: crow_indices/col_indices must be int64, got {crow.dtype}/{col.dtype}")
        torch._check(crow.dim() == 1 and col.dim() == 1, lambda: f"{name}: indices must be 1-D")
        torch._check(crow.shape[0] == rows + 1,
                     lambda: f"{name}: crow_indices must have length {rows} + 1, got {crow.shape[0]}")
        if values is not None:
            torch._check(values.dim() == 1 and values.shape[0] == col.shape[0],
                         lambda: f"{name}: values must have shape [{col.shape[0]}], got {tuple(values.shape)}")
            torch._check(values.dtype == dtype, lambda: f"{name}: values dtype {values.dtype} != {dtype}")

    @torch.library.register_fake(f"{ns}::csr_transpose")
    def _csr_transpose_fake(crow_indices, col_indices, in_features):
        _csr_fake_checks("csr_transpose", crow_indices, col_indices, None, None, crow_indices.shape[0] - 1)
        nnz = col_indices.shape[0]
        return (crow_indices.new_empty((in_features + 1,)), col_indices.new_empty((nnz,)),
                col_indices.new_empty((nnz,)))

    @torch.library.register_fake(f"{ns}::csr_linear")
    def _csr_linear_fake(x, crow_indices, col_indices, values, bias, out_features, t_crow=None, t_col=None,
                         t_perm=None):
        torch._check(x.dim() == 2, lambda: f"csr_linear: expected x to be 2-D, got {tuple(x.shape)}")
        _same_device("csr_linear", x=x, crow_indices=crow_indices, col_indices=col_indices, values=values,
                     bias=bias, t_crow=t_crow, t_col=t_col, t_perm=t_perm)
        _csr_fake_checks("csr_linear", crow_indices, col_indices, values, x.dtype, out_features)
        if bias is not None:
            torch._check(bias.dim() == 1 and bias.shape[0] == out_features and bias.dtype == x.dtype,
                         lambda: f"csr_linear: bias must be [{out_features}] {x.dtype}, got "
                                 f"{tuple(bias.shape)} {bias.dtype}")
        transposed = [t for t in (t_crow, t_col, t_perm) if t is not None]
        torch._check(len(transposed) in (0, 3),
                     lambda: "csr_linear: pass all of t_crow, t_col, t_perm (the cached transpose) or none")
        if transposed:
            torch._check(t_crow.shape[0] == x.shape[1] + 1 and t_col.shape[0] == col_indices.shape[0]
                         and t_perm.shape[0] == col_indices.shape[0],
                         lambda: "csr_linear: transposed structure has the wrong shape (stale cache?)")
        return x.new_empty((x.shape[0], out_features))

    @torch.library.register_fake(f"{ns}::csr_linear_backward")
    def _csr_linear_backward_fake(grad_out, x, crow_indices, col_indices, values, t_crow, t_col, t_perm,
                                  need_x, need_values, need_bias):
        torch._check(grad_out.dim() == 2 and x.dim() == 2 and grad_out.shape[0] == x.shape[0],
                     lambda: "csr_linear_backward: expected 2-D grad_out and x with the same number of rows")
        _same_device("csr_linear_backward", grad_out=grad_out, x=x, crow_indices=crow_indices,
                     col_indices=col_indices, values=values, t_crow=t_crow, t_col=t_col, t_perm=t_perm)
        _csr_fake_checks("csr_linear_backward", crow_indices, col_indices, values, x.dtype, grad_out.shape[1])
        nnz = col_indices.shape[0]
        return (x.new_empty((x.shape[0], x.shape[1]) if need_x else (0,)),
                x.new_empty((nnz,) if need_values else (0,)),
                x.new_empty((grad_out.shape[1],) if need_bias else (0,)))

    @torch.library.register_fake(f"{ns}::csr_linear_backward_input")
    def _csr_linear_backward_input_fake(grad_out, crow_indices, col_indices, values, in_features):
        torch._check(grad_out.dim() == 2, lambda: "csr_linear_backward_input: expected 2-D grad_out")
        _same_device("csr_linear_backward_input", grad_out=grad_out, crow_indices=crow_indices,
                     col_indices=col_indices, values=values)
        _csr_fake_checks("csr_linear_backward_input", crow_indices, col_indices, values, grad_out.dtype,
                         grad_out.shape[1])
        return grad_out.new_empty((grad_out.shape[0], in_features))

    @torch.library.register_fake(f"{ns}::csr_sddmm")
    def _csr_sddmm_fake(grad_out, x, crow_indices, col_indices):
        torch._check(x.dim() == 2 and grad_out.dim() == 2, lambda: "csr_sddmm: expected 2-D inputs")
        torch._check(x.shape[0] == grad_out.shape[0] and x.dtype == grad_out.dtype,
                     lambda: "csr_sddmm: x and grad_out must have the same number of rows and dtype")
        _same_device("csr_sddmm", grad_out=grad_out, x=x, crow_indices=crow_indices, col_indices=col_indices)
        _csr_fake_checks("csr_sddmm", crow_indices, col_indices, None, x.dtype, grad_out.shape[1])
        return x.new_empty((col_indices.shape[0],))

    @torch.library.register_fake(f"{ns}::bias_grad")
    def _bias_grad_fake(grad_out):
        torch._check(grad_out.dim() == 2, lambda: "bias_grad: expected 2-D grad_out")
        return grad_out.new_empty((grad_out.shape[1],))

    # ---- autograd
    def _lin_setup(ctx, inputs, output):
        x, crow, col, values, bias, out_features = inputs[:6]
        t_crow, t_col, t_perm = (tuple(inputs[6:]) + (None, None, None))[:3]
        ctx.in_features = x.shape[1]
        ctx.out_features = out_features
        ctx.has_bias = bias is not None
        need_x, need_v = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        fused = t_perm is not None  # the cached transpose allows the one-pass backward
        ctx.save_for_backward(x if (need_v or fused) else None, crow, col, values if (need_x or fused) else None,
                              t_crow if (need_x or fused) else None, t_col if (need_x or fused) else None,
                              t_perm if (need_x or fused) else None)

    def _lin_backward(ctx, grad):
        x, crow, col, values, t_crow, t_col, t_perm = ctx.saved_tensors
        need_x = ctx.needs_input_grad[0]
        need_v = ctx.needs_input_grad[3]
        need_b = ctx.has_bias and ctx.needs_input_grad[4]
        dx = dv = db = None
        if t_perm is not None and not torch.is_grad_enabled() and (need_x or need_v or need_b):
            # one pass over dY and X for all three gradients (not differentiable itself: with
            # create_graph=True the separate, differentiable ops below run instead)
            dx, dv, db = ops.csr_linear_backward(grad, x, crow, col, values, t_crow, t_col, t_perm,
                                                 need_x, need_v, need_b)
            return (dx if need_x else None), None, None, (dv if need_v else None), \
                (db if need_b else None), None, None, None, None
        if need_x:
            if t_perm is not None:
                # dX = dY W: the forward kernel over the cached W^T (no transpose per call)
                dx = ops.csr_linear(grad, t_crow, t_col, values[t_perm], None, ctx.in_features)
            else:
                dx = ops.csr_linear_backward_input(grad, crow, col, values, ctx.in_features)
        if need_v:
            dv = ops.csr_sddmm(grad, x, crow, col)
        if need_b:
            db = ops.bias_grad(grad)
        return dx, None, None, dv, db, None, None, None, None

    torch.library.register_autograd(f"{ns}::csr_linear", _lin_backward, setup_context=_lin_setup)

    # The backward ops are linear in each tensor argument, so they are differentiable with the
    # same kernels (double backward, gradgradcheck).
    def _bwi_setup(ctx, inputs, output):
        grad_out, crow, col, values, in_features = inputs
        ctx.out_features = grad_out.shape[1]
        ctx.save_for_backward(grad_out, crow, col, values)

    def _bwi_backward(ctx, gg):
        grad_out, crow, col, values = ctx.saved_tensors
        d_grad_out = d_values = None
        if ctx.needs_input_grad[0]:
            d_grad_out = ops.csr_linear(gg, crow, col, values, None, ctx.out_features)
        if ctx.needs_input_grad[3]:
            d_values = ops.csr_sddmm(grad_out, gg, crow, col)
        return d_grad_out, None, None, d_values, None

    torch.library.register_autograd(f"{ns}::csr_linear_backward_input", _bwi_backward,
                                    setup_context=_bwi_setup)

    def _sddmm_setup(ctx, inputs, output):
        grad_out, x, crow, col = inputs
        ctx.out_features = grad_out.shape[1]
        ctx.in_features = x.shape[1]
        ctx.save_for_backward(grad_out, x, crow, col)

    def _sddmm_backward(ctx, gv):
        grad_out, x, crow, col = ctx.saved_tensors
        d_grad_out = d_x = None
        if ctx.needs_input_grad[0]:
            d_grad_out = ops.csr_linear(x, crow, col, gv, None, ctx.out_features)
        if ctx.needs_input_grad[1]:
            d_x = ops.csr_linear_backward_input(grad_out, crow, col, gv, ctx.in_features)
        return d_grad_out, d_x, None, None

    torch.library.register_autograd(f"{ns}::csr_sddmm", _sddmm_backward, setup_context=_sddmm_setup)

    def _bias_setup(ctx, inputs, output):
        ctx.n = inputs[0].shape[0]

    def _bias_backward(ctx, gb):
        return gb.unsqueeze(0).expand(ctx.n, gb.shape[0])

    torch.library.register_autograd(f"{ns}::bias_grad", _bias_backward, setup_context=_bias_setup)

    # ---- FLOP formulas (torch.utils.flop_counter.FlopCounterMode)
    @register_flop_formula(ops.csr_linear_backward)
    def _csr_linear_backward_flop(grad_shape, x_shape, crow_shape, col_shape, values_shape, t_crow_shape,
                                  t_col_shape, t_perm_shape, need_x, need_values, need_bias, *args,
                                  out_shape=None, **kwargs) -> int:
        # dX and the SDDMM: 2·N·nnz each (the bias column sum counts 0, as for dense)
        return 2 * x_shape[0] * col_shape[0] * (int(bool(need_x)) + int(bool(need_values)))

    @register_flop_formula(ops.csr_transpose)
    def _csr_transpose_flop(*args, out_shape=None, **kwargs) -> int:
        return 0  # index bookkeeping, no floating-point work

    @register_flop_formula(ops.csr_linear)
    def _csr_linear_flop(x_shape, crow_shape, col_shape, values_shape, bias_shape, out_features,
                         *args, out_shape=None, **kwargs) -> int:
        return csr_linear_flops(x_shape[0], col_shape[0], out_features, bias_shape is not None)

    @register_flop_formula(ops.csr_linear_backward_input)
    def _csr_linear_backward_input_flop(grad_shape, crow_shape, col_shape, values_shape, in_features,
                                        *args, out_shape=None, **kwargs) -> int:
        return 2 * grad_shape[0] * col_shape[0]

    @register_flop_formula(ops.csr_sddmm)
    def _csr_sddmm_flop(grad_shape, x_shape, crow_shape, col_shape, *args, out_shape=None,
                        **kwargs) -> int:
        return 2 * x_shape[0] * col_shape[0]

    @register_flop_formula(ops.bias_grad)
    def _bias_grad_flop(grad_shape, *args, out_shape=None, **kwargs) -> int:
        # A column sum. FlopCounterMode does not count the dense bias gradient (a sum) either,
        # so it is 0 here to keep sparse-vs-dense FLOP ratios like for like.
        return 0


# =============================================================================================
# Block-sparse (BSR) registrations: fake kernels, autograd, FLOP formulas.
def _register_bsr(ns: str = "gnnsparse") -> None:
    """As :func:`_register`, for the BSR ops."""
    from torch.utils.flop_counter import register_flop_formula

    ops = getattr(torch.ops, ns)

    def _bsr_fake_checks(name, crow, col, values, dtype, out_f, in_f, b):
        torch._check(crow.dtype == torch.int64 and col.dtype == torch.int64,
                     lambda: f"{name}: crow_indices/col_indices must be int64, got {crow.dtype}/{col.dtype}")
        torch._check(crow.dim() == 1 and col.dim() == 1, lambda: f"{name}: indices must be 1-D")
        torch._check(b >= 1, lambda: f"{name}: blocksize must be >= 1, got {b}")
        torch._check(out_f % b == 0 and in_f % b == 0,
                     lambda: f"{name}: ({out_f}, {in_f}) is not divisible by blocksize {b}")
        torch._check(crow.shape[0] == out_f // b + 1,
                     lambda: f"{name}: crow_indices must have length {out_f // b} + 1, got {crow.shape[0]}")
        if values is not None:
            torch._check(values.dim() == 3 and values.shape[0] == col.shape[0] and values.shape[1] == b
                         and values.shape[2] == b,
                         lambda: f"{name}: values must have shape [{col.shape[0]}, {b}, {b}], got "
                                 f"{tuple(values.shape)}")
            torch._check(values.dtype == dtype, lambda: f"{name}: values dtype {values.dtype} != {dtype}")

    def _blocksize(name, values):
        torch._check(values.dim() == 3 and values.shape[1] == values.shape[2],
                     lambda: f"{name}: values must be [nnzb, b, b], got {tuple(values.shape)}")
        return values.shape[1]

    @torch.library.register_fake(f"{ns}::bsr_linear")
    def _bsr_linear_fake(x, crow_indices, col_indices, values, bias, out_features):
        torch._check(x.dim() == 2, lambda: f"bsr_linear: expected x to be 2-D, got {tuple(x.shape)}")
        _same_device("bsr_linear", x=x, crow_indices=crow_indices, col_indices=col_indices, values=values,
                     bias=bias)
        b = _blocksize("bsr_linear", values)
        _bsr_fake_checks("bsr_linear", crow_indices, col_indices, values, x.dtype, out_features, x.shape[1], b)
        if bias is not None:
            torch._check(bias.dim() == 1 and bias.shape[0] == out_features and bias.dtype == x.dtype,
                         lambda: f"bsr_linear: bias must be [{out_features}] {x.dtype}, got "
                                 f"{tuple(bias.shape)} {bias.dtype}")
        return x.new_empty((x.shape[0], out_features))

    @torch.library.register_fake(f"{ns}::bsr_linear_backward_input")
    def _bsr_linear_backward_input_fake(grad_out, crow_indices, col_indices, values, in_features):
        torch._check(grad_out.dim() == 2, lambda: "bsr_linear_backward_input: expected 2-D grad_out")
        _same_device("bsr_linear_backward_input", grad_out=grad_out, crow_indices=crow_indices,
                     col_indices=col_indices, values=values)
        b = _blocksize("bsr_linear_backward_input", values)
        _bsr_fake_checks("bsr_linear_backward_input", crow_indices, col_indices, values, grad_out.dtype,
                         grad_out.shape[1], in_features, b)
        return grad_out.new_empty((grad_out.shape[0], in_features))

    @torch.library.register_fake(f"{ns}::bsr_sddmm")
    def _bsr_sddmm_fake(grad_out, x, crow_indices, col_indices, blocksize):
        torch._check(x.dim() == 2 and grad_out.dim() == 2, lambda: "bsr_sddmm: expected 2-D inputs")
        torch._check(x.shape[0] == grad_out.shape[0] and x.dtype == grad_out.dtype,
                     lambda: "bsr_sddmm: x and grad_out must have the same number of rows and dtype")
        _same_device("bsr_sddmm", grad_out=grad_out, x=x, crow_indices=crow_indices, col_indices=col_indices)
        _bsr_fake_checks("bsr_sddmm", crow_indices, col_indices, None, x.dtype, grad_out.shape[1],
                         x.shape[1], blocksize)
        return x.new_empty((col_indices.shape[0], blocksize, blocksize))

    # ---- autograd
    def _lin_setup(ctx, inputs, output):
        x, crow, col, values, bias, out_features = inputs
        ctx.in_features = x.shape[1]
        ctx.out_features = out_features
        ctx.blocksize = values.shape[1]
        ctx.has_bias = bias is not None
        need_x, need_v = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        ctx.save_for_backward(x if need_v else None, crow, col, values if need_x else None)

    def _lin_backward(ctx, grad):
        x, crow, col, values = ctx.saved_tensors
        need_x = ctx.needs_input_grad[0]
        need_v = ctx.needs_input_grad[3]
        need_b = ctx.has_bias and ctx.needs_input_grad[4]
        dx = dv = db = None
        if need_x:
            dx = ops.bsr_linear_backward_input(grad, crow, col, values, ctx.in_features)
        if need_v:
            dv = ops.bsr_sddmm(grad, x, crow, col, ctx.blocksize)
        if need_b:
            db = ops.bias_grad(grad)
        return dx, None, None, dv, db, None

    torch.library.register_autograd(f"{ns}::bsr_linear", _lin_backward, setup_context=_lin_setup)

    # The backward ops are linear in each tensor argument: differentiable with the same kernels.
    def _bwi_setup(ctx, inputs, output):
        grad_out, crow, col, values, in_features = inputs
        ctx.out_features = grad_out.shape[1]
        ctx.blocksize = values.shape[1]
        ctx.save_for_backward(grad_out, crow, col, values)

    def _bwi_backward(ctx, gg):
        grad_out, crow, col, values = ctx.saved_tensors
        d_grad_out = d_values = None
        if ctx.needs_input_grad[0]:
            d_grad_out = ops.bsr_linear(gg, crow, col, values, None, ctx.out_features)
        if ctx.needs_input_grad[3]:
            d_values = ops.bsr_sddmm(grad_out, gg, crow, col, ctx.blocksize)
        return d_grad_out, None, None, d_values, None

    torch.library.register_autograd(f"{ns}::bsr_linear_backward_input", _bwi_backward,
                                    setup_context=_bwi_setup)

    def _sddmm_setup(ctx, inputs, output):
        grad_out, x, crow, col, blocksize = inputs
        ctx.out_features = grad_out.shape[1]
        ctx.in_features = x.shape[1]
        ctx.save_for_backward(grad_out, x, crow, col)

    def _sddmm_backward(ctx, gv):
        grad_out, x, crow, col = ctx.saved_tensors
        d_grad_out = d_x = None
        if ctx.needs_input_grad[0]:
            d_grad_out = ops.bsr_linear(x, crow, col, gv, None, ctx.out_features)
        if ctx.needs_input_grad[1]:
            d_x = ops.bsr_linear_backward_input(grad_out, crow, col, gv, ctx.in_features)
        return d_grad_out, d_x, None, None, None

    torch.library.register_autograd(f"{ns}::bsr_sddmm", _sddmm_backward, setup_context=_sddmm_setup)

    # ---- FLOP formulas: 2·N·nnzb·b² each (bias not counted)
    @register_flop_formula(ops.bsr_linear)
    def _bsr_linear_flop(x_shape, crow_shape, col_shape, values_shape, bias_shape, out_features,
                         *args, out_shape=None, **kwargs) -> int:
        return bsr_linear_flops(x_shape[0], col_shape[0], values_shape[1])

    @register_flop_formula(ops.bsr_linear_backward_input)
    def _bsr_linear_backward_input_flop(grad_shape, crow_shape, col_shape, values_shape, in_features,
                                        *args, out_shape=None, **kwargs) -> int:
        return bsr_linear_flops(grad_shape[0], col_shape[0], values_shape[1])

    @register_flop_formula(ops.bsr_sddmm)
    def _bsr_sddmm_flop(grad_shape, x_shape, crow_shape, col_shape, blocksize, *args, out_shape=None,
                        **kwargs) -> int:
        return bsr_linear_flops(x_shape[0], col_shape[0], blocksize)


if _ext.available():
    _register()
    _register_bsr()
    if triton_available():
        # Registered now, not on first use: a FlopCounterMode or torch.compile trace that is
        # already running when the first Triton call happens would otherwise miss the
        # registrations (torch.utils.flop_counter imports triton anyway, so this costs ~15 ms).
        try:
            _triton_ops()
        except Exception as e:  # noqa: BLE001 - reported when the backend is used
            _triton_error = e
