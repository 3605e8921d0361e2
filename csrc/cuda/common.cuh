// Shared helpers of the gnnsparse CUDA kernels (dispatch key CUDA): argument checks, the
// validated-structure cache and small device utilities.
//
// Headers are kept to ATen core + c10/cuda (no torch/extension.h, no ATen/cuda/CUDAContext.h,
// which pulls in cuBLAS/cuSPARSE headers): nvcc time dominates the CI build.
//
// Validation. Shapes, dtypes and devices are checked on the host for free. The *contents* of
// the index tensors (crow monotone, columns in range and sorted within each row, transposes
// consistent with W) are checked by a device kernel whose result is read back (one sync).
// A structure that passed is remembered by the identity and version counter of its index
// tensors (weak references, so a freed tensor never matches), so a layer that calls the op
// every step pays the check once per structure change, not per call.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

namespace gnnsparse {
namespace cuda {

constexpr unsigned kFullMask = 0xffffffffu;

inline cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

inline int sm_count() {
  int dev = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms;
}

inline int device_major() {
  int dev = 0, major = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return major;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- host-side argument checks (mirror csrc/cpu/common.h; messages name op, argument, shape)
inline void check_cuda(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK(t.device() == ref.device(), op, ": all tensors must be on one device, got ", name,
              " on ", t.device(), " and the input on ", ref.device());
}

inline void check_floating(const char* op, const at::Tensor& x) {
  auto s = x.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16, op,
              ": expected float32, float64, float16 or bfloat16 input, got ", s);
}

inline void check_index(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref) {
  check_cuda(op, name, t, ref);
  TORCH_CHECK(t.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1, op, ": ", name, " must be 1-D, got shape ", t.sizes());
}

inline void check_values(const char* op, const at::Tensor& values, const at::Tensor& ref, int64_t nnz) {
  check_cuda(op, "values", values, ref);
  TORCH_CHECK(values.scalar_type() == ref.scalar_type(), op, ": values dtype ", values.scalar_type(),
              " differs from the input dtype ", ref.scalar_type());
  TORCH_CHECK(values.dim() == 1 && values.size(0) == nnz, op, ": values must have shape [", nnz,
              "] (one per column index), got ", values.sizes());
}

inline void check_bias(const char* op, const c10::optional<at::Tensor>& bias, const at::Tensor& x,
                       int64_t out_features) {
  if (!bias.has_value()) return;
  check_cuda(op, "bias", *bias, x);
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == out_features, op, ": bias must have shape [",
              out_features, "], got ", bias->sizes());
  TORCH_CHECK(bias->scalar_type() == x.scalar_type(), op, ": bias dtype ", bias->scalar_type(),
              " differs from the input dtype ", x.scalar_type());
}

// A 2-D floating CUDA tensor [N, features] (an input or output gradient).
inline void check_input2d(const char* op, const char* name, const at::Tensor& x) {
  TORCH_CHECK(x.is_cuda(), op, ": ", name, " must be a CUDA tensor, got device ", x.device());
  TORCH_CHECK(x.dim() == 2, op, ": expected ", name, " to be 2-D [N, features], got shape ", x.sizes());
  check_floating(op, x);
}

// grad_out [N, out] and x [N, in] of a weight-gradient op: same device, rows and dtype.
inline void check_grad_and_input(const char* op, const at::Tensor& grad_out, const at::Tensor& x) {
  check_input2d(op, "grad_out", grad_out);
  check_input2d(op, "x", x);
  check_cuda(op, "x", x, grad_out);
  TORCH_CHECK(x.size(0) == grad_out.size(0), op, ": x has ", x.size(0), " rows but grad_out has ",
              grad_out.size(0));
  TORCH_CHECK(x.scalar_type() == grad_out.scalar_type(), op, ": x dtype ", x.scalar_type(),
              " differs from grad_out dtype ", grad_out.scalar_type());
}

// CSR W [rows, cols]: host checks of lengths, then (cached) device checks of the contents.
// Columns must be sorted ascending within each row (repeats allowed, summed): the forward
// kernel walks each row once across column chunks.
void validate_csr(const char* op, const at::Tensor& crow, const at::Tensor& col, int64_t rows,
                  int64_t cols);

// The transpose (t_crow [cols + 1], t_col [nnz], t_perm [nnz]) of a validated CSR W: t_perm a
// permutation with col[t_perm[q]] == c for q in row c of W^T and t_col[q] the row of that entry.
void validate_csr_transpose(const char* op, const at::Tensor& crow, const at::Tensor& col,
                            const at::Tensor& t_crow, const at::Tensor& t_col, const at::Tensor& t_perm,
                            int64_t rows, int64_t cols);

// For each group of kRowsPerTile consecutive rows, the rows of the group ordered by decreasing
// nnz (int32 [rows]); cached with the structure. Used by the CSR forward for warp load balance.
at::Tensor row_order(const at::Tensor& crow, int64_t rows, int64_t rows_per_tile);

// Transpose of a validated compressed structure with `cols` columns (no checks): (t_crow
// [cols + 1], t_col [nnz] = row of each entry, t_perm [nnz] = entry index), a stable sort of the
// entries by (column, row).
std::tuple<at::Tensor, at::Tensor, at::Tensor> transpose_structure(const at::Tensor& crow, const at::Tensor& col,
                                                                   int64_t cols);

// BSR W [rows * b, cols * b] (rows, cols in blocks): crow [rows + 1], block columns in range.
void validate_bsr(const char* op, const at::Tensor& crow, const at::Tensor& col, int64_t rows,
                  int64_t cols);

// ---- ops implemented in csrc/cuda/*.cu (registered in the file that defines them)
at::Tensor csr_linear_cuda(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
                           const at::Tensor& values, const c10::optional<at::Tensor>& bias,
                           int64_t out_features, const c10::optional<at::Tensor>& t_crow,
                           const c10::optional<at::Tensor>& t_col, const c10::optional<at::Tensor>& t_perm);
at::Tensor csr_sddmm_cuda(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& crow,
                          const at::Tensor& col);

// ---- device helpers
template <typename T>
__device__ __forceinline__ at::opmath_type<T> load_acc(const T* p) {
  return static_cast<at::opmath_type<T>>(p[0]);
}

}  // namespace cuda
}  // namespace gnnsparse
