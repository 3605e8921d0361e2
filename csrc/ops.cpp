// Operator schemas of the gnnsparse library (torch.ops.gnnsparse.*).
// Backend kernels are registered separately (csrc/cpu/*.cpp: dispatch key CPU;
// csrc/cuda/ later). Autograd, fake (meta) kernels and FLOP formulas are
// registered from Python in gnnsparse/ops.py.
//
// W is an (out_features, in_features) matrix in CSR form:
//   crow_indices int64 [out_features + 1], col_indices int64 [nnz],
//   values [nnz] (same floating dtype as x).
#include <torch/library.h>

TORCH_LIBRARY(gnnsparse, m) {
  // Y [N, out] = x [N, in] @ W^T (+ bias [out]).
  m.def(
      "csr_linear(Tensor x, Tensor crow_indices, Tensor col_indices, Tensor values, "
      "Tensor? bias, SymInt out_features, Tensor? t_crow=None, Tensor? t_col=None, "
      "Tensor? t_perm=None) -> Tensor");
  // Optional t_crow/t_col/t_perm: the cached transpose of W (from csr_transpose), checked
  // against W and used by the backward for dX = dY W as a forward pass over W^T.
  // (t_crow [in + 1], t_col [nnz], t_perm [nnz]) = transpose structure of W [out, in]:
  // W^T entry q is W entry t_perm[q].
  m.def("csr_transpose(Tensor crow_indices, Tensor col_indices, SymInt in_features) "
        "-> (Tensor, Tensor, Tensor)");
  // dX [N, in] = grad_out [N, out] @ W.
  m.def(
      "csr_linear_backward_input(Tensor grad_out, Tensor crow_indices, Tensor col_indices, "
      "Tensor values, SymInt in_features) -> Tensor");
  // The whole backward of csr_linear in one pass (dY and X read once): (dX [N, in] = dY W,
  // dvalues [nnz] = SDDMM, dbias [out] = column sums of dY); outputs not asked for are [0].
  // (t_crow, t_col, t_perm) is the transpose of W from csr_transpose.
  m.def(
      "csr_linear_backward(Tensor grad_out, Tensor x, Tensor crow_indices, Tensor col_indices, "
      "Tensor values, Tensor t_crow, Tensor t_col, Tensor t_perm, bool need_x, bool need_values, "
      "bool need_bias) -> (Tensor, Tensor, Tensor)");
  // dvalues [nnz]: dvalues[p] = sum_n grad_out[n, row(p)] * x[n, col(p)].
  m.def("csr_sddmm(Tensor grad_out, Tensor x, Tensor crow_indices, Tensor col_indices) -> Tensor");
  // [out] column sums of grad_out [N, out].
  m.def("bias_grad(Tensor grad_out) -> Tensor");

  // ---- Block-sparse (BSR) weights, square b x b blocks (kernels: csrc/cpu/bsr_*.cpp):
  //   crow_indices int64 [out_features / b + 1], col_indices int64 [nnzb] (block columns),
  //   values [nnzb, b, b] with values[k, i, j] = W[br * b + i, col[k] * b + j].
  // Y [N, out] = x [N, in] @ W^T (+ bias [out]); b = values.size(1).
  m.def(
      "bsr_linear(Tensor x, Tensor crow_indices, Tensor col_indices, Tensor values, "
      "Tensor? bias, SymInt out_features) -> Tensor");
  // dX [N, in] = grad_out [N, out] @ W.
  m.def(
      "bsr_linear_backward_input(Tensor grad_out, Tensor crow_indices, Tensor col_indices, "
      "Tensor values, SymInt in_features) -> Tensor");
  // dvalues [nnzb, b, b]: dvalues[k, i, j] = sum_n grad_out[n, br(k)*b + i] * x[n, col[k]*b + j].
  m.def(
      "bsr_sddmm(Tensor grad_out, Tensor x, Tensor crow_indices, Tensor col_indices, "
      "SymInt blocksize) -> Tensor");
}

// `import gnnsparse._C` needs a module init function; the ops are registered by
// the static initialisers above when the shared library is loaded. The CMake
// build produces a plain library for torch.ops.load_library and skips this.
#ifdef GNNSPARSE_PYTHON_MODULE
#include <Python.h>

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",
      "gnnsparse C++ operators (registered in torch.ops.gnnsparse on import).",
      -1,
      nullptr,
  };
  return PyModule_Create(&module_def);
}
#endif
