// CUDA kernels of the CSR weight linear layer: Y [N, out] = X [N, in] · Wᵀ (+ b), the input
// gradient dX = dY · W (the same kernel over Wᵀ) and the fused backward.
//
// Kernel design (row-split SpMM over node tiles, after Sputnik's building blocks):
//   * a thread block owns TN nodes (64; 32 for float64) and kTO = 128 consecutive rows of W; the
//     blocks of one node tile are consecutive in the (1-D) grid, so X is read from HBM about once;
//   * the input features are walked in chunks of kTK = 64: the X tile [TN, kTK] is loaded
//     coalesced and stored transposed in shared memory (xs[k][n]), so a stored weight (c, v)
//     updates all TN nodes of a warp from one conflict-free shared-memory row;
//   * one warp works on one row of W at a time: its lanes load 32 (column, value) pairs in one
//     coalesced read and broadcast them with shuffles; each lane accumulates 2 nodes (float2
//     loads from shared memory; 1 node in float64);
//   * load balance: within each 128-row tile the rows are handed to the 8 warps in order of
//     decreasing nnz, snake-wise (row order cached per structure), so warps finish together;
//   * each row keeps a cursor into its sorted columns across chunks (hence the CUDA backend
//     requires sorted columns per row, checked at validation);
//   * the output tile is staged in shared memory and written coalesced, with the bias.
// Accumulation is in at::opmath_type (float for half/bfloat16/float, double for double).
#include "common.cuh"

#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include <climits>
#include <tuple>

namespace gnnsparse {
namespace cuda {

// from structure.cu
std::tuple<at::Tensor, at::Tensor, at::Tensor> csr_transpose_impl(const at::Tensor& crow, const at::Tensor& col,
                                                                   int64_t in_features);

namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kTO = 128;             // rows of W per block
constexpr int kRPW = kTO / kWarps;   // rows per warp
constexpr int kTK = 64;              // input features per shared-memory chunk

template <typename acc_t>
struct NodesPerLane {
  static constexpr int value = 2;
};
template <>
struct NodesPerLane<double> {
  static constexpr int value = 1;
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
    csr_fwd_kernel(const T* __restrict__ x, int64_t x_rs, int64_t N, int K, const int64_t* __restrict__ crow,
                   const int64_t* __restrict__ col, const T* __restrict__ val, const int64_t* __restrict__ perm,
                   const int32_t* __restrict__ order, const T* __restrict__ bias, T* __restrict__ y, int M) {
  using acc_t = at::opmath_type<T>;
  constexpr int NPL = NodesPerLane<acc_t>::value;
  constexpr int TN = 32 * NPL;
  constexpr int XS = TN + 4;  // row stride of xs: keeps 8-byte alignment, spreads transposed stores
  constexpr int YS = TN + 1;  // row stride of the output staging buffer: conflict-free column reads
  constexpr int SMEM = (kTO * YS > kTK * XS) ? kTO * YS : kTK * XS;
  __shared__ __align__(16) acc_t smem[SMEM];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  // 1-D grid, row tiles fastest: the blocks that share a node tile run together, so its X tile
  // comes from L2 for all but the first of them.
  const int row_tiles = (M + kTO - 1) / kTO;
  const int64_t n0 = (int64_t)(blockIdx.x / row_tiles) * TN;
  const int o0 = (int)(blockIdx.x % row_tiles) * kTO;

  int p[kRPW], e[kRPW], lrow[kRPW];
  acc_t acc[kRPW][NPL];
#pragma unroll
  for (int r = 0; r < kRPW; ++r) {
    const int slot = r * kWarps + ((r & 1) ? (kWarps - 1 - warp) : warp);  // snake over warps
    const int o = o0 + slot;
    if (o < M) {
      const int row = order[o];
      p[r] = (int)crow[row];
      e[r] = (int)crow[row + 1];
      lrow[r] = row - o0;
    } else {
      p[r] = e[r] = 0;
      lrow[r] = -1;
    }
#pragma unroll
    for (int i = 0; i < NPL; ++i) acc[r][i] = 0;
  }

  for (int k0 = 0; k0 < K; k0 += kTK) {
    __syncthreads();  // the previous chunk is consumed
    for (int idx = threadIdx.x; idx < TN * kTK; idx += kThreads) {
      const int nn = idx / kTK, kk = idx % kTK;
      const int64_t n = n0 + nn;
      const int k = k0 + kk;
      acc_t v = 0;
      if (n < N && k < K) v = static_cast<acc_t>(x[n * x_rs + k]);
      smem[kk * XS + nn] = v;
    }
    __syncthreads();
    const int kend = k0 + kTK;
#pragma unroll
    for (int r = 0; r < kRPW; ++r) {
      while (p[r] < e[r]) {  // warp-uniform
        const int q = p[r] + lane;
        int c = INT_MAX;
        acc_t v = 0;
        if (q < e[r]) {
          c = (int)col[q];
          v = static_cast<acc_t>(val[perm ? perm[q] : q]);
        }
        // columns are sorted, so the entries of this chunk are a prefix of the 32 loaded
        const int cnt = __popc(__ballot_sync(kFullMask, c < kend));
        for (int j = 0; j < cnt; ++j) {
          const int cj = __shfl_sync(kFullMask, c, j) - k0;
          const acc_t vj = __shfl_sync(kFullMask, v, j);
          if constexpr (NPL == 2) {
            const float2 xv = *reinterpret_cast<const float2*>(smem + cj * XS + 2 * lane);
            acc[r][0] += vj * xv.x;
            acc[r][1] += vj * xv.y;
          } else {
            acc[r][0] += vj * smem[cj * XS + lane];
          }
        }
        p[r] += cnt;
        if (cnt < 32) break;
      }
    }
  }

  __syncthreads();
#pragma unroll
  for (int r = 0; r < kRPW; ++r) {
    if (lrow[r] >= 0) {
#pragma unroll
      for (int i = 0; i < NPL; ++i) smem[lrow[r] * YS + NPL * lane + i] = acc[r][i];
    }
  }
  __syncthreads();
  const int rows_here = min(kTO, M - o0);
  for (int idx = threadIdx.x; idx < TN * kTO; idx += kThreads) {
    const int nn = idx / kTO, oo = idx % kTO;
    const int64_t n = n0 + nn;
    if (n < N && oo < rows_here) {
      acc_t v = smem[oo * YS + nn];
      if (bias) v += static_cast<acc_t>(bias[o0 + oo]);
      y[n * M + o0 + oo] = static_cast<T>(v);
    }
  }
}

// Y [N, M] = X [N, K] · Wᵀ (+ bias) for a validated CSR W [M, K]; with perm, the value of entry q
// is values[perm[q]] (W is then the transpose of a weight stored in another order).
at::Tensor csr_forward(const at::Tensor& x_in, const at::Tensor& crow, const at::Tensor& col,
                       const at::Tensor& values, const c10::optional<at::Tensor>& perm,
                       const c10::optional<at::Tensor>& bias, int64_t M) {
  const int64_t N = x_in.size(0), K = x_in.size(1);
  auto x = (x_in.stride(1) == 1 && x_in.stride(0) >= K) ? x_in : x_in.contiguous();
  auto y = at::empty({N, M}, x.options());
  if (N == 0 || M == 0) return y;
  TORCH_CHECK(M < INT32_MAX, "csr_linear: the CUDA kernels support fewer than 2^31 output features, got ", M);
  // K is an int in the kernel (k0 + kTK must not overflow); over W^T it is out_features, which
  // validate_csr does not bound
  TORCH_CHECK(K < INT32_MAX - 256, "csr_linear: the CUDA kernels support fewer than 2^31 input features, got ", K);
  auto order = row_order(crow, M, kTO);
  auto c = crow.contiguous();
  auto ci = col.contiguous();
  auto v = values.contiguous();
  at::Tensor pm = perm.has_value() ? perm->contiguous() : at::Tensor();
  at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  const int64_t blocks = ceil_div(N, x.scalar_type() == at::kDouble ? 32 : 64) * ceil_div(M, kTO);
  TORCH_CHECK(blocks <= INT32_MAX, "csr_linear: too many nodes x output features for one launch: ", N, " x ", M);
  const dim3 grid((unsigned)blocks);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "csr_linear_cuda", [&] {
    csr_fwd_kernel<scalar_t><<<grid, kThreads, 0, stream()>>>(
        x.const_data_ptr<scalar_t>(), x.stride(0), N, (int)K, c.const_data_ptr<int64_t>(),
        ci.const_data_ptr<int64_t>(), v.const_data_ptr<scalar_t>(),
        pm.defined() ? pm.const_data_ptr<int64_t>() : nullptr, order.const_data_ptr<int32_t>(),
        b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>(), (int)M);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

void check_weight(const char* op, const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
                  const at::Tensor& values, int64_t rows, int64_t cols) {
  check_index(op, "crow_indices", crow, x);
  check_index(op, "col_indices", col, x);
  check_values(op, values, x, col.size(0));
  validate_csr(op, crow, col, rows, cols);
}

}  // namespace

at::Tensor csr_linear_cuda(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
                           const at::Tensor& values, const c10::optional<at::Tensor>& bias, int64_t out_features,
                           const c10::optional<at::Tensor>& t_crow, const c10::optional<at::Tensor>& t_col,
                           const c10::optional<at::Tensor>& t_perm) {
  const char* op = "csr_linear";
  check_input2d(op, "x", x);
  c10::cuda::CUDAGuard guard(x.device());
  check_weight(op, x, crow, col, values, out_features, x.size(1));
  check_bias(op, bias, x, out_features);
  const int given = (int)t_crow.has_value() + (int)t_col.has_value() + (int)t_perm.has_value();
  TORCH_CHECK(given == 0 || given == 3, op, ": give all of t_crow, t_col, t_perm or none");
  if (given == 3) validate_csr_transpose(op, crow, col, *t_crow, *t_col, *t_perm, out_features, x.size(1));
  return csr_forward(x, crow, col, values, c10::nullopt, bias, out_features);
}

namespace {

at::Tensor csr_linear_backward_input_cuda(const at::Tensor& grad_out, const at::Tensor& crow, const at::Tensor& col,
                                          const at::Tensor& values, int64_t in_features) {
  const char* op = "csr_linear_backward_input";
  check_input2d(op, "grad_out", grad_out);
  c10::cuda::CUDAGuard guard(grad_out.device());
  check_weight(op, grad_out, crow, col, values, grad_out.size(1), in_features);
  auto [t_crow, t_col, t_perm] = csr_transpose_impl(crow, col, in_features);
  return csr_forward(grad_out, t_crow, t_col, values, t_perm, c10::nullopt, in_features);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> csr_linear_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
    const at::Tensor& values, const at::Tensor& t_crow, const at::Tensor& t_col, const at::Tensor& t_perm,
    bool need_x, bool need_values, bool need_bias) {
  const char* op = "csr_linear_backward";
  check_grad_and_input(op, grad_out, x);
  c10::cuda::CUDAGuard guard(grad_out.device());
  const int64_t out_f = grad_out.size(1), in_f = x.size(1);
  check_weight(op, grad_out, crow, col, values, out_f, in_f);
  validate_csr_transpose(op, crow, col, t_crow, t_col, t_perm, out_f, in_f);
  // a separate [0] tensor per output not asked for: outputs of an op must not alias each other
  auto none = [&] { return at::empty({0}, grad_out.options()); };
  at::Tensor dx = need_x ? csr_forward(grad_out, t_crow, t_col, values, t_perm, c10::nullopt, in_f) : none();
  at::Tensor dv = need_values ? csr_sddmm_cuda(grad_out, x, crow, col) : none();
  at::Tensor db = need_bias ? at::sum(grad_out, {0}) : none();
  return {dx, dv, db};
}

}  // namespace
}  // namespace cuda
}  // namespace gnnsparse

TORCH_LIBRARY_IMPL(gnnsparse, CUDA, m) {
  m.impl("csr_linear", &gnnsparse::cuda::csr_linear_cuda);
  m.impl("csr_linear_backward_input", &gnnsparse::cuda::csr_linear_backward_input_cuda);
  m.impl("csr_linear_backward", &gnnsparse::cuda::csr_linear_backward_cuda);
}
