"""Build script for gnnsparse and its C++ extension ``gnnsparse._C``.

Install (torch must already be installed; no build isolation, which would pull
a second copy of torch into the build environment):

    pip install --no-build-isolation -e .

The extension is a plain shared library whose static initialisers register
``torch.ops.gnnsparse.*`` (schemas in csrc/ops.cpp, CPU kernels in csrc/cpu/; the
edge-list parsing helpers of gnnsparse.data.ingest, CPU only, in csrc/io/).
It is built for the baseline x86-64 ISA (no -march=native); the AVX2+FMA hot
loops are compiled with ``__attribute__((target))`` and chosen at run time.

CUDA kernels (csrc/cuda/*.cu) go into a second library, ``gnnsparse._C_cuda``, which registers
them for the CUDA dispatch key of the same ops. ``GNNSPARSE_CUDA`` chooses:

* ``auto`` (default): build it when torch is a CUDA build and nvcc is found;
* ``1``: build it, and fail if that is not possible;
* ``0``: do not build it.

Target architectures come from ``TORCH_CUDA_ARCH_LIST``, default ``8.0;9.0`` (sm_80, sm_90).
``CUDA_HOME`` defaults to /usr/local/cuda when that holds nvcc. A machine without a GPU can
build it (nothing runs at build time).
"""
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

# torch.utils.cpp_extension derives CUDA_HOME from the nvcc on PATH, which can be a wrapper
# script outside the toolkit (/usr/local/bin/nvcc): point it at the toolkit before importing.
if not os.environ.get("CUDA_HOME") and not os.environ.get("CUDA_PATH") \
        and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - torch is a build prerequisite
    sys.exit(
        "gnnsparse: torch must be installed before building; then run "
        "`pip install --no-build-isolation -e .`"
    )

ROOT = os.path.dirname(os.path.abspath(__file__))


def _sources():
    cpu = sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    io = sorted(glob.glob(os.path.join("csrc", "io", "*.cpp")))  # edge-list parsing (CPU only, no counterparts)
    return [os.path.join("csrc", "ops.cpp")] + cpu + io


def _cuda_wanted() -> bool:
    mode = os.environ.get("GNNSPARSE_CUDA", "auto").strip().lower() or "auto"
    if mode not in ("auto", "0", "1"):
        sys.exit(f"gnnsparse: GNNSPARSE_CUDA must be auto, 0 or 1, got {mode!r}")
    if mode == "0":
        return False
    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else shutil.which("nvcc")
    problems = []
    if torch.version.cuda is None:
        problems.append(f"torch {torch.__version__} is not a CUDA build")
    if not nvcc or not os.path.exists(nvcc):
        problems.append(f"nvcc not found ({'looked at ' + nvcc if nvcc else 'not on PATH'}; set CUDA_HOME)")
    if problems and mode == "1":
        sys.exit("gnnsparse: GNNSPARSE_CUDA=1 but the CUDA extension cannot be built: " + "; ".join(problems))
    if problems:
        print("gnnsparse: building without CUDA kernels: " + "; ".join(problems), file=sys.stderr)
        return False
    return True


def _cuda_extension():
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu"))) + [os.path.join("csrc", "cuda", "module.cpp")]
    return CUDAExtension(
        name="gnnsparse._C_cuda",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={
            "cxx": ["-O3", "-DGNNSPARSE_PYTHON_MODULE"],
            "nvcc": ["-O3", "-lineinfo"],
        },
    )


def _extensions():
    if sys.platform == "win32":
        cxx = ["/O2", "/openmp", "/std:c++20", "/DGNNSPARSE_PYTHON_MODULE"]
        link = []
    else:
        cxx = ["-O3", "-fopenmp", "-DGNNSPARSE_PYTHON_MODULE", "-Wall", "-Wno-unknown-pragmas"]
        link = ["-fopenmp"]
    if sys.platform == "darwin":  # Apple clang has no -fopenmp
        cxx = [f for f in cxx if f != "-fopenmp"]
        link = []
    exts = [
        CppExtension(
            name="gnnsparse._C",
            sources=_sources(),
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args={"cxx": cxx},
            extra_link_args=link,
        )
    ]
    if _cuda_wanted():
        exts.append(_cuda_extension())
    return exts


setup(
    name="gnnsparse",
    version="0.1.0",
    description="Really sparse CSR weight layers for graph neural networks",
    packages=find_packages(include=["gnnsparse*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",  # torch.library.custom_op / register_autograd / register_fake
        "torch-geometric>=2.5",
        "numpy>=1.24",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "scikit-learn>=1.2",
    ],
    extras_require={"triton": ["triton>=3.0"]},
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    entry_points={"console_scripts": ["gnnsparse=gnnsparse.cli:main"]},
    zip_safe=False,
)
