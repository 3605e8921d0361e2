// CUDA kernel of the CSR weight gradient at stored positions (SDDMM):
//   dvalues[p] = sum_n grad_out[n, row(p)] · x[n, col(p)].
//
// Design: a thread block owns kTO = 32 rows of W, a chunk of kTK = 64 columns and one split of
// the node range (nodes are the long axis, so they are split across blocks for parallelism).
// The block's stored entries (found by binary search in each row's sorted columns) are spread
// over its threads, 8 per thread per pass. For each tile of kTN = 32 nodes, the dY tile
// [32 rows x 32 nodes] and the X tile [64 columns x 32 nodes] are staged transposed in shared
// memory, and every thread adds the 32-node dot products of its entries (float4 loads).
// Each split writes its partial sums to its own slice of a [splits, nnz] buffer, which is then
// summed in a fixed order: the result is deterministic for a given GPU.
#include "common.cuh"

#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

namespace gnnsparse {
namespace cuda {
namespace {

constexpr int kTO = 32;   // rows of W per block
constexpr int kTK = 64;   // columns of W per block
constexpr int kTN = 32;   // nodes per shared-memory tile
constexpr int kThreads = 256;
constexpr int kEPT = 8;   // entries per thread per pass (kTO * kTK / kThreads: one pass without repeats)
constexpr int kStride = kTN + 4;  // shared row stride: 16-byte aligned rows

__device__ __forceinline__ int lower_bound(const int64_t* __restrict__ col, int a, int b, int64_t v) {
  while (a < b) {
    const int m = a + (b - a) / 2;
    if (col[m] < v) a = m + 1;
    else b = m;
  }
  return a;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    csr_sddmm_kernel(const T* __restrict__ dy, int64_t dy_rs, const T* __restrict__ x, int64_t x_rs, int64_t N,
                     int M, int K, const int64_t* __restrict__ crow, const int64_t* __restrict__ col,
                     int64_t nodes_per_split, at::opmath_type<T>* __restrict__ partial, int64_t nnz) {
  using acc_t = at::opmath_type<T>;
  __shared__ __align__(16) acc_t dys[kTO * kStride];
  __shared__ __align__(16) acc_t xs[kTK * kStride];
  __shared__ int lo[kTO];
  __shared__ int pre[kTO + 1];

  const int o0 = blockIdx.x * kTO;
  const int c0 = blockIdx.y * kTK;
  const int64_t nb = (int64_t)blockIdx.z * nodes_per_split;
  const int64_t ne = min(N, nb + nodes_per_split);

  if (threadIdx.x < kTO) {
    const int row = o0 + threadIdx.x;
    int a = 0, b = 0;
    if (row < M) {
      const int s = (int)crow[row], t = (int)crow[row + 1];
      a = lower_bound(col, s, t, c0);
      b = lower_bound(col, a, t, (int64_t)c0 + kTK);
    }
    lo[threadIdx.x] = a;
    pre[threadIdx.x + 1] = b - a;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    pre[0] = 0;
    for (int r = 0; r < kTO; ++r) pre[r + 1] += pre[r];
  }
  __syncthreads();
  const int E = pre[kTO];

  for (int base = 0; base < E; base += kThreads * kEPT) {  // one pass unless a row repeats columns
    int er[kEPT], ec[kEPT], ep[kEPT];
    acc_t acc[kEPT];
#pragma unroll
    for (int i = 0; i < kEPT; ++i) {
      const int e = base + threadIdx.x + i * kThreads;
      er[i] = -1;
      ec[i] = 0;
      ep[i] = 0;
      acc[i] = 0;
      if (e < E) {
        int a = 0, b = kTO;  // largest r with pre[r] <= e
        while (b - a > 1) {
          const int m = (a + b) / 2;
          if (pre[m] <= e) a = m;
          else b = m;
        }
        const int p = lo[a] + (e - pre[a]);
        er[i] = a;
        ec[i] = (int)col[p] - c0;
        ep[i] = p;
      }
    }
    for (int64_t n0 = nb; n0 < ne; n0 += kTN) {
      __syncthreads();
      for (int idx = threadIdx.x; idx < kTN * kTO; idx += kThreads) {
        const int nn = idx / kTO, j = idx % kTO;
        const int64_t n = n0 + nn;
        acc_t v = 0;
        if (n < ne && o0 + j < M) v = static_cast<acc_t>(dy[n * dy_rs + o0 + j]);
        dys[j * kStride + nn] = v;
      }
      for (int idx = threadIdx.x; idx < kTN * kTK; idx += kThreads) {
        const int nn = idx / kTK, kk = idx % kTK;
        const int64_t n = n0 + nn;
        acc_t v = 0;
        if (n < ne && c0 + kk < K) v = static_cast<acc_t>(x[n * x_rs + c0 + kk]);
        xs[kk * kStride + nn] = v;
      }
      __syncthreads();
#pragma unroll
      for (int i = 0; i < kEPT; ++i) {
        if (er[i] < 0) continue;
        const acc_t* a = dys + er[i] * kStride;
        const acc_t* b = xs + ec[i] * kStride;
        acc_t s = 0;
        if constexpr (sizeof(acc_t) == 4) {
#pragma unroll
          for (int nn = 0; nn < kTN; nn += 4) {
            const float4 u = *reinterpret_cast<const float4*>(a + nn);
            const float4 w = *reinterpret_cast<const float4*>(b + nn);
            s += u.x * w.x + u.y * w.y + u.z * w.z + u.w * w.w;
          }
        } else {
#pragma unroll
          for (int nn = 0; nn < kTN; ++nn) s += a[nn] * b[nn];
        }
        acc[i] += s;
      }
    }
    const int64_t off = (int64_t)blockIdx.z * nnz;
#pragma unroll
    for (int i = 0; i < kEPT; ++i)
      if (er[i] >= 0) partial[off + ep[i]] = acc[i];
  }
}

}  // namespace

at::Tensor csr_sddmm_cuda(const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& crow,
                          const at::Tensor& col) {
  const char* op = "csr_sddmm";
  check_grad_and_input(op, grad_out_in, x_in);
  check_index(op, "crow_indices", crow, x_in);
  check_index(op, "col_indices", col, x_in);
  c10::cuda::CUDAGuard guard(x_in.device());
  const int64_t N = x_in.size(0), M = grad_out_in.size(1), K = x_in.size(1), nnz = col.size(0);
  validate_csr(op, crow, col, M, K);
  TORCH_CHECK(M < INT32_MAX - 256, op, ": the CUDA kernels support fewer than 2^31 output features, got ", M);  // int M, o0
  if (nnz == 0) return at::empty({0}, x_in.options());
  if (N == 0) return at::zeros({nnz}, x_in.options());
  auto dy = grad_out_in.stride(1) == 1 ? grad_out_in : grad_out_in.contiguous();
  auto x = x_in.stride(1) == 1 ? x_in : x_in.contiguous();
  const int64_t row_tiles = ceil_div(M, kTO), col_chunks = ceil_div(K, kTK), node_tiles = ceil_div(N, kTN);
  TORCH_CHECK(col_chunks <= 65535, op, ": too many input features for one launch: ", K);
  const int64_t target = 4 * (int64_t)sm_count();
  int64_t splits = std::min<int64_t>(node_tiles, std::max<int64_t>(1, ceil_div(target, row_tiles * col_chunks)));
  splits = std::min<int64_t>(splits, 65535);
  const int64_t tiles_per_split = ceil_div(node_tiles, splits);
  splits = ceil_div(node_tiles, tiles_per_split);
  auto c = crow.contiguous();
  auto ci = col.contiguous();
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto partial = at::empty({splits, nnz}, x.options().dtype(acc_type));
  const dim3 grid((unsigned)row_tiles, (unsigned)col_chunks, (unsigned)splits);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "csr_sddmm_cuda", [&] {
    csr_sddmm_kernel<scalar_t><<<grid, kThreads, 0, stream()>>>(
        dy.const_data_ptr<scalar_t>(), dy.stride(0), x.const_data_ptr<scalar_t>(), x.stride(0), N, (int)M, (int)K,
        c.const_data_ptr<int64_t>(), ci.const_data_ptr<int64_t>(), tiles_per_split * kTN,
        partial.mutable_data_ptr<at::opmath_type<scalar_t>>(), nnz);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto dv = splits == 1 ? partial.select(0, 0) : at::sum(partial, {0});
  return dv.scalar_type() == x.scalar_type() ? dv : dv.to(x.scalar_type());
}

}  // namespace cuda
}  // namespace gnnsparse

TORCH_LIBRARY_IMPL(gnnsparse, CUDA, m) {
  m.impl("csr_sddmm", &gnnsparse::cuda::csr_sddmm_cuda);
}
