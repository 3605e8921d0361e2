// CPU op: csr_transpose, the structure of W^T for a CSR W [rows, cols], plus the permutation
// that maps each transposed entry to its entry in W:
//   t_crow int64 [cols + 1], t_col int64 [nnz] (a row index of W), perm int64 [nnz] with
//   W^T entry q == W entry perm[q]; so values_t = values[perm].
// Counting sort, O(nnz + rows + cols); within each transposed row the entries are in
// increasing row order (stable). SparseLinear caches the result per structure so that the
// input gradient dX = dY W runs as the forward kernel on W^T without a transpose per call.
#include "common.h"

#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <limits>
#include <tuple>
#include <vector>

namespace gnnsparse {
namespace cpu {

void csr_transpose_structure(const int64_t* crow, const int64_t* col, int64_t rows, int64_t cols,
                             int64_t* t_crow, int64_t* t_col, int64_t* perm) {
  const int64_t nnz = crow[rows];
  std::fill(t_crow, t_crow + cols + 1, int64_t(0));
  for (int64_t p = 0; p < nnz; ++p) t_crow[col[p] + 1] += 1;
  for (int64_t c = 0; c < cols; ++c) t_crow[c + 1] += t_crow[c];
  std::vector<int64_t> next(t_crow, t_crow + cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t p = crow[r]; p < crow[r + 1]; ++p) {
      const int64_t q = next[col[p]]++;
      t_col[q] = r;
      perm[q] = p;
    }
  }
}

void check_csr_transpose(const char* op, const at::Tensor& crow, const at::Tensor& col,
                         const at::Tensor& t_crow, const at::Tensor& t_col,
                         const at::Tensor& t_perm, int64_t rows, int64_t cols) {
  // (crow, col) is already validated as CSR [rows, cols].
  const int64_t nnz = col.size(0);
  for (const auto* t : {&t_crow, &t_col, &t_perm}) {
    check_cpu(op, "transposed structure", *t);
    TORCH_CHECK(t->scalar_type() == at::kLong && t->dim() == 1 && t->is_contiguous(), op,
                ": expected t_crow/t_col/t_perm to be contiguous 1-D int64, got ",
                t->scalar_type(), " ", t->sizes());
  }
  // size(0) - 1 == cols: cols + 1 overflowed for an empty x of shape [0, INT64_MAX] (UBSan)
  TORCH_CHECK(t_crow.size(0) - 1 == cols && t_col.size(0) == nnz && t_perm.size(0) == nnz, op,
              ": transposed structure has shapes t_crow ", t_crow.sizes(), ", t_col ",
              t_col.sizes(), ", t_perm ", t_perm.sizes(), "; expected [",
              static_cast<uint64_t>(cols) + 1, "], [", nnz, "], [", nnz, "] (stale cache after a structure change?)");
  const int64_t* cr = crow.data_ptr<int64_t>();
  const int64_t* ci = col.data_ptr<int64_t>();
  const int64_t* tcr = t_crow.data_ptr<int64_t>();
  const int64_t* tci = t_col.data_ptr<int64_t>();
  const int64_t* tp = t_perm.data_ptr<int64_t>();
  TORCH_CHECK(tcr[0] == 0 && tcr[cols] == nnz, op,
              ": t_crow must start at 0 and end at nnz = ", nnz);
  for (int64_t c = 0; c < cols; ++c) {  // bounds before any indexing with t_crow
    TORCH_CHECK(tcr[c + 1] >= tcr[c] && tcr[c + 1] <= nnz, op,
                ": t_crow must be non-decreasing and within [0, nnz] at ", c + 1);
  }
  std::vector<int64_t> row_of(static_cast<size_t>(nnz));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t p = cr[r]; p < cr[r + 1]; ++p) row_of[p] = r;
  }
  std::vector<char> seen(static_cast<size_t>(nnz), 0);
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t q = tcr[c]; q < tcr[c + 1]; ++q) {
      const int64_t p = tp[q];
      TORCH_CHECK(p >= 0 && p < nnz && !seen[p] && ci[p] == c && row_of[p] == tci[q], op,
                  ": the transposed structure does not match W at entry ", q,
                  " (stale cache after a structure change?)");
      seen[p] = 1;
    }
  }
}

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> csr_transpose_cpu(const at::Tensor& crow_indices,
                                                                 const at::Tensor& col_indices,
                                                                 int64_t in_features) {
  constexpr const char* op = "gnnsparse::csr_transpose";
  const at::Tensor crow = crow_indices.contiguous();
  const at::Tensor col = col_indices.contiguous();
  check_cpu(op, "crow_indices", crow);
  check_dim(op, "crow_indices", crow, 1);
  TORCH_CHECK(crow.size(0) >= 1, op, ": expected crow_indices of shape [out_features + 1], got ",
              crow.sizes());
  const int64_t rows = crow.size(0) - 1;
  check_csr(op, crow, col, nullptr, rows, in_features, "out_features", "in_features");
  // t_crow has in_features + 1 entries (in_features = INT64_MAX overflowed: found by UBSan)
  TORCH_CHECK(in_features < std::numeric_limits<int64_t>::max(), op, ": in_features = ", in_features,
              " is too large");
  const int64_t nnz = col.size(0);
  at::Tensor t_crow = at::empty({in_features + 1}, crow.options());
  at::Tensor t_col = at::empty({nnz}, crow.options());
  at::Tensor perm = at::empty({nnz}, crow.options());
  csr_transpose_structure(crow.data_ptr<int64_t>(), col.data_ptr<int64_t>(), rows, in_features,
                          t_crow.data_ptr<int64_t>(), t_col.data_ptr<int64_t>(),
                          perm.data_ptr<int64_t>());
  return {t_crow, t_col, perm};
}

}  // namespace
}  // namespace cpu
}  // namespace gnnsparse

TORCH_LIBRARY_IMPL(gnnsparse, CPU, m) {
  m.impl("csr_transpose", &gnnsparse::cpu::csr_transpose_cpu);
}
