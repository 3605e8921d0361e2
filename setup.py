"""Build script for gnnsparse and its C++ extension ``gnnsparse._C``.

Install (torch must already be installed; no build isolation, which would pull
a second copy of torch into the build environment):

    pip install --no-build-isolation -e .

The extension is a plain shared library whose static initialisers register
``torch.ops.gnnsparse.*`` (schemas in csrc/ops.cpp, CPU kernels in csrc/cpu/).
It is built for the baseline x86-64 ISA (no -march=native); the AVX2+FMA hot
loops are compiled with ``__attribute__((target))`` and chosen at run time.
"""
import glob
import os
import sys

from setuptools import find_packages, setup

try:
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError:  # pragma: no cover - torch is a build prerequisite
    sys.exit(
        "gnnsparse: torch must be installed before building; then run "
        "`pip install --no-build-isolation -e .`"
    )

ROOT = os.path.dirname(os.path.abspath(__file__))


def _sources():
    cpu = sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    return [os.path.join("csrc", "ops.cpp")] + cpu


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
    return [
        CppExtension(
            name="gnnsparse._C",
            sources=_sources(),
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args={"cxx": cxx},
            extra_link_args=link,
        )
    ]


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
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    entry_points={"console_scripts": ["gnnsparse=gnnsparse.cli:main"]},
    zip_safe=False,
)
