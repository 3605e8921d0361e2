"""Triton kernels of gnnsparse's ops (the ``"triton"`` backend), installed as ``gnnsparse.kernels``.

Each module carries the op of the same name as ``csrc/cpu/<op>.cpp``, ``csrc/cuda/<op>.cu`` and
``gnnsparse.reference.<op>``. They run on CUDA tensors, or on CPU tensors under Triton's
interpreter (``TRITON_INTERPRET=1`` set before ``triton`` is imported). Autograd, fake kernels
and FLOP formulas are registered in :mod:`gnnsparse.ops`; these functions are plain forward
computations.
"""
