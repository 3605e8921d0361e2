// CUDA kernels of the block-sparse (BSR, square b x b blocks) weight linear layer:
//   bsr_linear                 Y [N, out] = X [N, in] · Wᵀ (+ b)
//   bsr_linear_backward_input  dX [N, in] = dY [N, out] · W   (the forward kernel over Wᵀ)
//   bsr_sddmm                  dvalues[k] = dY[:, rows of block k]ᵀ · X[:, columns of block k]
//
// Tensor cores (WMMA) when b is a multiple of 16 on sm_80+: float16 and bfloat16 (16x16x16,
// float32 accumulation), and float32 through TF32 (16x16x8) only when TF32 is allowed for
// matmuls (torch.backends.cuda.matmul.allow_tf32, as for cuBLAS); otherwise, and for float64 and
// other block sizes, a plain SIMT kernel. Node tiles are staged in shared memory (zero-filled
// past N), so X needs no alignment; block values are read by WMMA straight from global memory
// (copied once if their base is not 32-byte aligned).
#include "common.cuh"

#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/repeat_interleave.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#include <torch/library.h>

namespace gnnsparse {
namespace cuda {
namespace {

namespace wmma = nvcuda::wmma;

// ---------------------------------------------------------------------------------------------
// SIMT kernels (any b, any floating dtype)

// Y[n, o] = sum over blocks q of block row o / b: sum_j X[n, col[q]·b + j] · V_k[o % b][j]
// (kTrans: V_k[j][o % b]); k = perm[q] when perm is given, else q.
template <typename T, bool kTrans>
__global__ void bsr_fwd_simt_kernel(const T* __restrict__ x, int64_t x_rs, int64_t N,
                                    const int64_t* __restrict__ crow, const int64_t* __restrict__ col,
                                    const int64_t* __restrict__ perm, const T* __restrict__ val, int b,
                                    const T* __restrict__ bias, T* __restrict__ y, int M) {
  using acc_t = at::opmath_type<T>;
  const int out_tiles = (M + 31) / 32;  // 1-D grid, output tiles fastest (X tiles shared in L2)
  const int o = (int)(blockIdx.x % out_tiles) * 32 + threadIdx.x;
  const int64_t n = (int64_t)(blockIdx.x / out_tiles) * 8 + threadIdx.y;
  if (o >= M || n >= N) return;
  const int br = o / b, i = o % b;
  acc_t acc = 0;
  for (int64_t q = crow[br]; q < crow[br + 1]; ++q) {
    const int64_t k = perm ? perm[q] : q;
    const T* xr = x + n * x_rs + col[q] * b;
    const T* vb = val + k * b * b;
    for (int j = 0; j < b; ++j)
      acc += static_cast<acc_t>(xr[j]) * static_cast<acc_t>(kTrans ? vb[j * b + i] : vb[i * b + j]);
  }
  if (bias) acc += static_cast<acc_t>(bias[o]);
  y[n * M + o] = static_cast<T>(acc);
}

// partial[split, k, i, j] = sum over the split's nodes of dY[n, brow[k]·b + i] · X[n, col[k]·b + j]
template <typename T>
__global__ void bsr_sddmm_simt_kernel(const T* __restrict__ dy, int64_t dy_rs, const T* __restrict__ x,
                                      int64_t x_rs, int64_t N, const int64_t* __restrict__ brow,
                                      const int64_t* __restrict__ col, int b, int64_t nnzb,
                                      int64_t nodes_per_split, at::opmath_type<T>* __restrict__ partial) {
  using acc_t = at::opmath_type<T>;
  const int64_t total = nnzb * b * b;
  const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= total) return;
  const int64_t k = e / (b * b);
  const int i = (int)((e / b) % b), j = (int)(e % b);
  const int64_t r = brow[k] * b + i, c = col[k] * b + j;
  const int64_t nb = (int64_t)blockIdx.y * nodes_per_split;
  const int64_t ne = min(N, nb + nodes_per_split);
  acc_t acc = 0;
  for (int64_t n = nb; n < ne; ++n) acc += static_cast<acc_t>(dy[n * dy_rs + r]) * static_cast<acc_t>(x[n * x_rs + c]);
  partial[(int64_t)blockIdx.y * total + e] = acc;
}

// ---------------------------------------------------------------------------------------------
// Tensor-core kernels (b % 16 == 0). Element types as WMMA sees them:
template <typename T>
struct Mma;
template <>
struct Mma<c10::Half> {
  using elem = __half;       // storage and fragment type
  using frag = __half;
  static constexpr int K = 16;
  static constexpr int LD = 24;  // staging row stride (elements): a multiple of 8, rows 16-byte aligned
  __device__ static elem cvt(c10::Half v) { return *reinterpret_cast<const __half*>(&v); }
};
template <>
struct Mma<c10::BFloat16> {
  using elem = __nv_bfloat16;
  using frag = __nv_bfloat16;
  static constexpr int K = 16;
  static constexpr int LD = 24;
  __device__ static elem cvt(c10::BFloat16 v) { return *reinterpret_cast<const __nv_bfloat16*>(&v); }
};
template <>
struct Mma<float> {
  using elem = float;
  using frag = wmma::precision::tf32;
  static constexpr int K = 8;
  static constexpr int LD = 20;  // a multiple of 4
  __device__ static elem cvt(float v) { return v; }
};

template <typename Frag>
__device__ __forceinline__ void round_tf32(Frag& f) {
#pragma unroll
  for (int t = 0; t < f.num_elements; ++t) f.x[t] = wmma::__float_to_tf32(f.x[t]);
}

constexpr int kMmaWarps = 4;
constexpr int kWarpNodes = 32;  // two 16-node fragments per warp share each B fragment
constexpr int kCLD = 20;        // float staging stride of accumulators

// Each warp: 32 nodes x one 16-wide output tile. Block: 4 warps = 128 nodes.
// Forward (kTrans false): B[kk][oo] = V_k[io + oo][red + kk], col-major with ldm b.
// dX (kTrans true, blocks of Wᵀ through perm): B[kk][oo] = V_k[red + kk][io + oo], row-major.
template <typename T, bool kTrans>
__global__ void __launch_bounds__(32 * kMmaWarps)
    bsr_fwd_mma_kernel(const T* __restrict__ x, int64_t x_rs, int64_t N, const int64_t* __restrict__ crow,
                       const int64_t* __restrict__ col, const int64_t* __restrict__ perm,
                       const T* __restrict__ val, int b, const T* __restrict__ bias, T* __restrict__ y, int M) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using M_ = Mma<T>;
  using elem = typename M_::elem;
  using frag_t = typename M_::frag;
  constexpr int KF = M_::K;
  constexpr int LD = M_::LD;
  using BLayout = typename std::conditional<kTrans, wmma::row_major, wmma::col_major>::type;
  __shared__ __align__(32) elem As[kMmaWarps][kWarpNodes * LD];
  __shared__ __align__(32) float Cs[kMmaWarps][kWarpNodes * kCLD];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int out_tiles = M / 16;  // 1-D grid, 16-wide output tiles fastest (X tiles shared in L2)
  const int64_t nw = (int64_t)(blockIdx.x / out_tiles) * (kWarpNodes * kMmaWarps) + warp * kWarpNodes;
  const int ot = (int)(blockIdx.x % out_tiles);  // 16-wide output tile
  const int br = (ot * 16) / b, io = (ot * 16) % b;
  const elem* v = reinterpret_cast<const elem*>(val);
  elem* as = As[warp];

  wmma::fragment<wmma::accumulator, 16, 16, KF, float> acc[2];
  wmma::fill_fragment(acc[0], 0.0f);
  wmma::fill_fragment(acc[1], 0.0f);

  for (int64_t q = crow[br]; q < crow[br + 1]; ++q) {
    const int64_t k = perm ? perm[q] : q;
    const int64_t cb = col[q] * b;
    const elem* vb = v + k * b * b;
    for (int red = 0; red < b; red += 16) {
      __syncwarp();
      for (int idx = lane; idx < kWarpNodes * 16; idx += 32) {  // stage X[32 nodes, 16 features]
        const int nn = idx >> 4, f = idx & 15;
        const int64_t n = nw + nn;
        as[nn * LD + f] = n < N ? M_::cvt(x[n * x_rs + cb + red + f]) : M_::cvt(T(0));
      }
      __syncwarp();
#pragma unroll
      for (int kk = 0; kk < 16; kk += KF) {
        wmma::fragment<wmma::matrix_b, 16, 16, KF, frag_t, BLayout> bf;
        const elem* bp = kTrans ? vb + (int64_t)(red + kk) * b + io : vb + (int64_t)io * b + red + kk;
        wmma::load_matrix_sync(bf, bp, b);
        if constexpr (KF == 8) round_tf32(bf);
#pragma unroll
        for (int s = 0; s < 2; ++s) {
          wmma::fragment<wmma::matrix_a, 16, 16, KF, frag_t, wmma::row_major> af;
          wmma::load_matrix_sync(af, as + s * 16 * LD + kk, LD);
          if constexpr (KF == 8) round_tf32(af);
          wmma::mma_sync(acc[s], af, bf, acc[s]);
        }
      }
    }
  }
  float* cs = Cs[warp];
  wmma::store_matrix_sync(cs, acc[0], kCLD, wmma::mem_row_major);
  wmma::store_matrix_sync(cs + 16 * kCLD, acc[1], kCLD, wmma::mem_row_major);
  __syncwarp();
  for (int idx = lane; idx < kWarpNodes * 16; idx += 32) {
    const int nn = idx >> 4, oo = idx & 15;
    const int64_t n = nw + nn;
    if (n < N) {
      float r = cs[nn * kCLD + oo];
      const int o = ot * 16 + oo;
      if (bias) r += static_cast<float>(bias[o]);
      y[n * M + o] = static_cast<T>(r);
    }
  }
#else
  __trap();  // launched only on sm_80+ (checked on the host)
#endif
}

// partial[split, k, is·16 + ii, js·16 + jj] for one 16x16 sub-block (is, js) of block k:
// A = dY tileᵀ (16 rows x 16 nodes, col-major staging), B = X tile (16 nodes x 16 columns).
// 4 warps walk disjoint 16-node steps of the split and are summed in a fixed order.
template <typename T>
__global__ void __launch_bounds__(32 * kMmaWarps)
    bsr_sddmm_mma_kernel(const T* __restrict__ dy, int64_t dy_rs, const T* __restrict__ x, int64_t x_rs, int64_t N,
                         const int64_t* __restrict__ brow, const int64_t* __restrict__ col, int b, int64_t nnzb,
                         int64_t nodes_per_split, float* __restrict__ partial) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using M_ = Mma<T>;
  using elem = typename M_::elem;
  using frag_t = typename M_::frag;
  constexpr int KF = M_::K;
  constexpr int LD = M_::LD;
  __shared__ __align__(32) elem As[kMmaWarps][16 * LD];
  __shared__ __align__(32) elem Bs[kMmaWarps][16 * LD];
  __shared__ __align__(32) float Cs[kMmaWarps][16 * kCLD];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sub = b / 16;
  const int64_t k = blockIdx.x / (sub * sub);
  const int is = (int)((blockIdx.x / sub) % sub), js = (int)(blockIdx.x % sub);
  const int64_t r0 = brow[k] * b + is * 16, c0 = col[k] * b + js * 16;
  const int64_t nb = (int64_t)blockIdx.y * nodes_per_split;
  const int64_t ne = min(N, nb + nodes_per_split);
  elem* as = As[warp];
  elem* bs = Bs[warp];

  wmma::fragment<wmma::accumulator, 16, 16, KF, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  for (int64_t n0 = nb + warp * 16; n0 < ne; n0 += 16 * kMmaWarps) {
    __syncwarp();
    for (int idx = lane; idx < 256; idx += 32) {
      const int nn = idx >> 4, f = idx & 15;
      const int64_t n = n0 + nn;
      const bool ok = n < ne;
      as[nn * LD + f] = ok ? M_::cvt(dy[n * dy_rs + r0 + f]) : M_::cvt(T(0));
      bs[nn * LD + f] = ok ? M_::cvt(x[n * x_rs + c0 + f]) : M_::cvt(T(0));
    }
    __syncwarp();
#pragma unroll
    for (int kk = 0; kk < 16; kk += KF) {
      // A[ii][nn] = as[nn][ii]: column-major with ldm LD; B[nn][jj] = bs[nn][jj]: row-major
      wmma::fragment<wmma::matrix_a, 16, 16, KF, frag_t, wmma::col_major> af;
      wmma::fragment<wmma::matrix_b, 16, 16, KF, frag_t, wmma::row_major> bf;
      wmma::load_matrix_sync(af, as + kk * LD, LD);
      wmma::load_matrix_sync(bf, bs + kk * LD, LD);
      if constexpr (KF == 8) {
        round_tf32(af);
        round_tf32(bf);
      }
      wmma::mma_sync(acc, af, bf, acc);
    }
  }
  wmma::store_matrix_sync(Cs[warp], acc, kCLD, wmma::mem_row_major);
  __syncthreads();
  const int64_t total = nnzb * b * b;
  for (int idx = threadIdx.x; idx < 256; idx += blockDim.x) {
    const int ii = idx >> 4, jj = idx & 15;
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kMmaWarps; ++w) s += Cs[w][ii * kCLD + jj];
    partial[(int64_t)blockIdx.y * total + k * b * b + (int64_t)(is * 16 + ii) * b + js * 16 + jj] = s;
  }
#else
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------
// Host side
// TF32 for float32 matmuls, as torch.backends.cuda.matmul.allow_tf32 / set_float32_matmul_precision
// say. allowTF32CuBLAS() throws when the legacy and the new precision APIs were mixed; then the
// matmul precision setting decides.
bool tf32_allowed() {
  try {
    return at::globalContext().allowTF32CuBLAS();
  } catch (const c10::Error&) {
    return at::globalContext().float32MatmulPrecision() != at::Float32MatmulPrecision::HIGHEST;
  }
}

bool use_mma(at::ScalarType t, int64_t b) {
  if (b % 16 != 0 || device_major() < 8) return false;
  if (t == at::kHalf || t == at::kBFloat16) return true;
  return t == at::kFloat && tf32_allowed();
}

// Calls f(T{}) for the element type T of a tensor-core dtype (float16, bfloat16, float32 as TF32).
template <typename F>
void dispatch_mma(at::ScalarType t, F&& f) {
  switch (t) {
    case at::kHalf: f(c10::Half{}); break;
    case at::kBFloat16: f(c10::BFloat16{}); break;
    case at::kFloat: f(float{}); break;
    default: TORCH_CHECK(false, "gnnsparse: no tensor-core path for dtype ", t);
  }
}

int64_t blocksize_of(const char* op, const at::Tensor& values) {
  TORCH_CHECK(values.dim() == 3 && values.size(1) == values.size(2) && values.size(1) >= 1, op,
              ": values must have shape [nnzb, b, b] with b >= 1, got ", values.sizes());
  return values.size(1);
}

void check_bsr_weight(const char* op, const at::Tensor& ref, const at::Tensor& crow, const at::Tensor& col,
                      const at::Tensor& values, int64_t b, int64_t out_f, int64_t in_f) {
  check_index(op, "crow_indices", crow, ref);
  check_index(op, "col_indices", col, ref);
  TORCH_CHECK(b >= 1, op, ": blocksize must be >= 1, got ", b);
  TORCH_CHECK(out_f % b == 0 && in_f % b == 0, op, ": the weight shape (", out_f, ", ", in_f,
              ") is not divisible by the blocksize ", b);
  if (values.defined()) {
    check_cuda(op, "values", values, ref);
    TORCH_CHECK(values.scalar_type() == ref.scalar_type(), op, ": values dtype ", values.scalar_type(),
                " differs from the input dtype ", ref.scalar_type());
    TORCH_CHECK(values.size(0) == col.size(0), op, ": values has ", values.size(0), " blocks but col_indices has ",
                col.size(0));
  }
  validate_bsr(op, crow, col, out_f / b, in_f / b);
}

at::Tensor rows_unit_stride(const at::Tensor& t) { return t.stride(1) == 1 ? t : t.contiguous(); }

at::Tensor aligned_values(const at::Tensor& values) {
  auto v = values.contiguous();
  if (reinterpret_cast<uintptr_t>(v.const_data_ptr()) % 32 != 0) v = v.clone();
  return v;
}

// Y [N, M] = X [N, ·] times the blocks of the compressed structure (crow, col[, perm]).
at::Tensor bsr_forward(const at::Tensor& x_in, const at::Tensor& crow, const at::Tensor& col,
                       const at::Tensor& perm, const at::Tensor& values, int64_t b, bool trans,
                       const c10::optional<at::Tensor>& bias, int64_t M) {
  const int64_t N = x_in.size(0);
  auto y = at::empty({N, M}, x_in.options());
  if (N == 0 || M == 0) return y;
  TORCH_CHECK(M < INT32_MAX, "bsr_linear: the CUDA kernels support fewer than 2^31 output features, got ", M);
  auto x = rows_unit_stride(x_in);
  auto c = crow.contiguous();
  auto ci = col.contiguous();
  auto v = aligned_values(values);
  at::Tensor bs = bias.has_value() ? bias->contiguous() : at::Tensor();
  const int64_t* pm = perm.defined() ? perm.const_data_ptr<int64_t>() : nullptr;
  if (use_mma(x.scalar_type(), b)) {
    const int64_t blocks = ceil_div(N, kWarpNodes * kMmaWarps) * (M / 16);
    TORCH_CHECK(blocks <= INT32_MAX, "bsr_linear: too many nodes x output features for one launch: ", N, " x ", M);
    const dim3 grid((unsigned)blocks);
    dispatch_mma(x.scalar_type(), [&](auto tag) {
      using scalar_t = decltype(tag);
      auto launch = trans ? bsr_fwd_mma_kernel<scalar_t, true> : bsr_fwd_mma_kernel<scalar_t, false>;
      launch<<<grid, 32 * kMmaWarps, 0, stream()>>>(x.const_data_ptr<scalar_t>(), x.stride(0), N,
          c.const_data_ptr<int64_t>(), ci.const_data_ptr<int64_t>(), pm, v.const_data_ptr<scalar_t>(), (int)b,
          bs.defined() ? bs.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>(), (int)M);
    });
  } else {
    const int64_t blocks = ceil_div(N, 8) * ceil_div(M, 32);
    TORCH_CHECK(blocks <= INT32_MAX, "bsr_linear: too many nodes x output features for one launch: ", N, " x ", M);
    const dim3 grid((unsigned)blocks);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bsr_linear_simt", [&] {
      auto launch = trans ? bsr_fwd_simt_kernel<scalar_t, true> : bsr_fwd_simt_kernel<scalar_t, false>;
      launch<<<grid, dim3(32, 8), 0, stream()>>>(x.const_data_ptr<scalar_t>(), x.stride(0), N,
          c.const_data_ptr<int64_t>(), ci.const_data_ptr<int64_t>(), pm, v.const_data_ptr<scalar_t>(), (int)b,
          bs.defined() ? bs.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>(), (int)M);
    });
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

at::Tensor bsr_linear_cuda(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
                           const at::Tensor& values, const c10::optional<at::Tensor>& bias, int64_t out_features) {
  const char* op = "bsr_linear";
  check_input2d(op, "x", x);
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t b = blocksize_of(op, values);
  check_bsr_weight(op, x, crow, col, values, b, out_features, x.size(1));
  check_bias(op, bias, x, out_features);
  return bsr_forward(x, crow, col, at::Tensor(), values, b, /*trans=*/false, bias, out_features);
}

at::Tensor bsr_linear_backward_input_cuda(const at::Tensor& grad_out, const at::Tensor& crow, const at::Tensor& col,
                                          const at::Tensor& values, int64_t in_features) {
  const char* op = "bsr_linear_backward_input";
  check_input2d(op, "grad_out", grad_out);
  c10::cuda::CUDAGuard guard(grad_out.device());
  const int64_t b = blocksize_of(op, values);
  check_bsr_weight(op, grad_out, crow, col, values, b, grad_out.size(1), in_features);
  auto [t_crow, t_col, t_perm] = transpose_structure(crow, col, in_features / b);
  return bsr_forward(grad_out, t_crow, t_col, t_perm, values, b, /*trans=*/true, c10::nullopt, in_features);
}

at::Tensor bsr_sddmm_cuda(const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& crow,
                          const at::Tensor& col, int64_t b) {
  const char* op = "bsr_sddmm";
  check_grad_and_input(op, grad_out_in, x_in);
  c10::cuda::CUDAGuard guard(x_in.device());
  const int64_t N = x_in.size(0), M = grad_out_in.size(1), K = x_in.size(1);
  check_bsr_weight(op, x_in, crow, col, at::Tensor(), b, M, K);
  const int64_t nnzb = col.size(0);
  if (nnzb == 0) return at::empty({0, b, b}, x_in.options());
  if (N == 0) return at::zeros({nnzb, b, b}, x_in.options());
  auto dy = rows_unit_stride(grad_out_in);
  auto x = rows_unit_stride(x_in);
  auto c = crow.contiguous();
  auto ci = col.contiguous();
  auto brow = at::repeat_interleave(c.slice(0, 1) - c.slice(0, 0, c.size(0) - 1), nnzb);
  const bool mma = use_mma(x.scalar_type(), b);
  const int64_t total = nnzb * b * b;
  const int64_t base_blocks = mma ? nnzb * (b / 16) * (b / 16) : ceil_div(total, 256);
  const int64_t step = mma ? 16 * kMmaWarps : 1;
  const int64_t node_steps = ceil_div(N, step);
  int64_t splits = std::min<int64_t>(node_steps, std::max<int64_t>(1, ceil_div(4 * (int64_t)sm_count(), base_blocks)));
  splits = std::min<int64_t>(splits, 65535);
  const int64_t steps_per_split = ceil_div(node_steps, splits);
  splits = ceil_div(node_steps, steps_per_split);
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto partial = at::empty({splits, nnzb, b, b}, x.options().dtype(acc_type));
  TORCH_CHECK(base_blocks < INT32_MAX, op, ": too many blocks for one launch: ", nnzb);
  const dim3 grid((unsigned)base_blocks, (unsigned)splits);
  if (mma) {
    dispatch_mma(x.scalar_type(), [&](auto tag) {
      using scalar_t = decltype(tag);
      bsr_sddmm_mma_kernel<scalar_t><<<grid, 32 * kMmaWarps, 0, stream()>>>(dy.const_data_ptr<scalar_t>(),
          dy.stride(0), x.const_data_ptr<scalar_t>(), x.stride(0), N, brow.const_data_ptr<int64_t>(),
          ci.const_data_ptr<int64_t>(), (int)b, nnzb, steps_per_split * step, partial.mutable_data_ptr<float>());
    });
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bsr_sddmm_simt", [&] {
      bsr_sddmm_simt_kernel<scalar_t><<<grid, 256, 0, stream()>>>(dy.const_data_ptr<scalar_t>(), dy.stride(0),
          x.const_data_ptr<scalar_t>(), x.stride(0), N, brow.const_data_ptr<int64_t>(), ci.const_data_ptr<int64_t>(),
          (int)b, nnzb, steps_per_split * step, partial.mutable_data_ptr<at::opmath_type<scalar_t>>());
    });
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto dv = splits == 1 ? partial.select(0, 0) : at::sum(partial, {0});
  return dv.scalar_type() == x.scalar_type() ? dv : dv.to(x.scalar_type());
}

}  // namespace
}  // namespace cuda
}  // namespace gnnsparse

TORCH_LIBRARY_IMPL(gnnsparse, CUDA, m) {
  m.impl("bsr_linear", &gnnsparse::cuda::bsr_linear_cuda);
  m.impl("bsr_linear_backward_input", &gnnsparse::cuda::bsr_linear_backward_input_cuda);
  m.impl("bsr_sddmm", &gnnsparse::cuda::bsr_sddmm_cuda);
}
