// CPU kernels: bsr_linear (Y = X W^T + b) and bsr_linear_backward_input (dX = dY W) for a
// weight W stored in BSR with square b x b blocks (layout in bsr_common.h).
//
// Algorithm (no transposes of X or Y): a register-blocked micro-GEMM over the stored blocks.
// For a micro-tile of NT consecutive nodes and one block row br, the outputs
// y[n, br*b .. br*b + b) (or a slice of VB vectors of them when b is large) stay in vector
// accumulators across all blocks of the block row; for block k and each input column j of
// it, x[n, col[k]*b + j] is broadcast and multiplied with the contiguous vector
// W[br*b .. br*b + b, col[k]*b + j] (blocks are packed transposed once per call) and
// accumulated with FMA. The finished outputs are written straight into the row-major Y.
// dX = dY W is the same computation on the block transpose of W (built per call, O(nnzb b^2)).
//
// Micro-tiles of nodes are distributed with OpenMP schedule(static); every output element is
// computed by one thread in a fixed order (bias, then blocks in stored order, columns
// ascending), so results do not depend on the thread count.
//
// Three paths: a portable one (compiler-vectorised over the b outputs of a block row, any b),
// an AVX2+FMA one for b in {4, 8, 16, 32} and an AVX-512 one (same micro-kernels, zmm
// registers; float b = 16, 32, double b = 8, 16, 32), chosen at run time (see common.h,
// GNNSPARSE_CPU_ISA, and bsr_common.h: select_vec_isa); other blocksizes use the portable path.
// Streams of X are prefetched a few tiles ahead; large outputs are written with non-temporal
// stores when a node's slice is whole cache lines.
#include "bsr_common.h"

#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <type_traits>

namespace gnnsparse {
namespace cpu {
namespace {

using bsr::check_bsr;

constexpr int64_t kGenericTile = 8;  // nodes per tile of the portable path
constexpr int64_t kPrefetchTiles = 4;  // AVX2 path: prefetch X this many tiles ahead
constexpr int64_t kStreamBytes = int64_t(16) << 20;  // outputs this large: non-temporal stores

// ---------------------------------------------------------------------------
// Portable path. Y[n, br*b + i] = bias + sum_k sum_j X[n, col[k]*b + j] * P[k][j][i] for the
// nn (<= tile) rows of X/Y given; B = 0 means a run-time blocksize b.
template <typename T, int B>
void fwd_rows_generic(const T* __restrict X, int64_t ldx, int64_t nn, const int64_t* crow,
                      const int64_t* col, const T* __restrict P, int64_t nbr, int64_t b_rt,
                      const T* __restrict bias, T* __restrict Y, int64_t ldy) {
  const int64_t b = B ? B : b_rt;
  const int64_t bb = b * b;
  for (int64_t n = 0; n < nn; ++n) {
    const T* __restrict x = X + n * ldx;
    T* __restrict y = Y + n * ldy;
    for (int64_t br = 0; br < nbr; ++br) {
      T* __restrict yr = y + br * b;
      if constexpr (B > 0) {
        T acc[B > 0 ? B : 1];
        for (int i = 0; i < B; ++i) acc[i] = bias ? bias[br * B + i] : T(0);
        for (int64_t k = crow[br]; k < crow[br + 1]; ++k) {
          const T* __restrict xk = x + col[k] * B;
          const T* __restrict pk = P + k * bb;
          for (int j = 0; j < B; ++j) {
            const T xv = xk[j];
            const T* __restrict w = pk + j * B;
            for (int i = 0; i < B; ++i) acc[i] += xv * w[i];
          }
        }
        for (int i = 0; i < B; ++i) yr[i] = acc[i];
      } else {
        for (int64_t i = 0; i < b; ++i) yr[i] = bias ? bias[br * b + i] : T(0);
        for (int64_t k = crow[br]; k < crow[br + 1]; ++k) {
          const T* __restrict xk = x + col[k] * b;
          const T* __restrict pk = P + k * bb;
          for (int64_t j = 0; j < b; ++j) {
            const T xv = xk[j];
            const T* __restrict w = pk + j * b;
            for (int64_t i = 0; i < b; ++i) yr[i] += xv * w[i];
          }
        }
      }
    }
  }
}

#if GNNSPARSE_HAVE_AVX2_PATH
#define BSR_TARGET GNNSPARSE_TARGET_AVX2
#define BSR_KNS avx2
#include "bsr_fwd_kernels.inc"
#undef BSR_KNS
#undef BSR_TARGET
#define BSR_TARGET GNNSPARSE_TARGET_AVX512
#define BSR_KNS avx512
#include "bsr_fwd_kernels.inc"
#undef BSR_KNS
#undef BSR_TARGET
#endif  // GNNSPARSE_HAVE_AVX2_PATH

// Register tiling of the vector paths: kIsa 1 = AVX2 (bsr::Cfg), 2 = AVX-512 (bsr::Cfg512).
template <typename T, int B, int kIsa>
using KernelCfg = std::conditional_t<kIsa == 2, bsr::Cfg512<T, B>, bsr::Cfg<T, B>>;

// Y[N, nbr*b] = X[N, *] (block matrix P as packed)ᵀ (+ bias), parallel over node tiles.
// kIsa: 0 portable (any b; B = 0 means run-time b), 1 AVX2, 2 AVX-512.
template <typename T, int B, int kIsa>
void bsr_fwd_driver(const T* X, int64_t N, int64_t ldx, const int64_t* crow, const int64_t* col,
                    const T* P, int64_t nbr, int64_t b, const T* bias, T* Y, int64_t ldy) {
  int64_t tile = kGenericTile;
  bool stream = false;
#if GNNSPARSE_HAVE_AVX2_PATH
  if constexpr (kIsa != 0) {
    using C = KernelCfg<T, B, kIsa>;
    tile = C::NT;
    // Non-temporal stores when Y is far larger than the caches (no read-for-ownership, no
    // eviction of X) and each micro-tile slice of a node is one or more whole cache lines
    // (partial-line non-temporal stores are slow).
    constexpr int64_t slice_bytes = int64_t(C::VB) * C::V::W * sizeof(T);
    stream = slice_bytes % 64 == 0 && N * ldy * static_cast<int64_t>(sizeof(T)) >= kStreamBytes &&
             reinterpret_cast<uintptr_t>(Y) % 64 == 0 &&
             (ldy * static_cast<int64_t>(sizeof(T))) % 64 == 0;
  }
#endif
  const int64_t ntiles = ceil_div(N, tile);
  if (ntiles == 0 || nbr == 0) return;
  const int nt = num_threads_for(ntiles);
#pragma omp parallel num_threads(nt)
  {
#pragma omp for schedule(static) nowait
    for (int64_t t = 0; t < ntiles; ++t) {
      const int64_t n0 = t * tile;
      const int64_t nn = std::min<int64_t>(tile, N - n0);
      if constexpr (kIsa != 0) {
#if GNNSPARSE_HAVE_AVX2_PATH
        using C = KernelCfg<T, B, kIsa>;
        const int64_t p0 = std::min<int64_t>(N, n0 + kPrefetchTiles * tile);
        const int64_t p1 = std::min<int64_t>(N, p0 + tile);
        const int64_t pf_bytes = (p1 - p0) * ldx * static_cast<int64_t>(sizeof(T));
        const T* xs = X + n0 * ldx;
        T* ys = Y + n0 * ldy;
        const T* pf = X + p0 * ldx;
        if constexpr (kIsa == 2) {
          if (stream) {
            avx512::fwd_rows<C, B, true>(xs, ldx, nn, crow, col, P, nbr, bias, ys, ldy, pf, pf_bytes);
          } else {
            avx512::fwd_rows<C, B, false>(xs, ldx, nn, crow, col, P, nbr, bias, ys, ldy, pf, pf_bytes);
          }
        } else {
          if (stream) {
            avx2::fwd_rows<C, B, true>(xs, ldx, nn, crow, col, P, nbr, bias, ys, ldy, pf, pf_bytes);
          } else {
            avx2::fwd_rows<C, B, false>(xs, ldx, nn, crow, col, P, nbr, bias, ys, ldy, pf, pf_bytes);
          }
        }
#endif
      } else {
        fwd_rows_generic<T, B>(X + n0 * ldx, ldx, nn, crow, col, P, nbr, b, bias, Y + n0 * ldy,
                               ldy);
      }
    }
#if GNNSPARSE_HAVE_AVX2_PATH
    if (stream) _mm_sfence();  // order this thread's non-temporal stores before the join
#endif
  }
}

template <typename T>
void bsr_fwd_dispatch(const T* X, int64_t N, int64_t ldx, const int64_t* crow, const int64_t* col,
                      const T* P, int64_t nbr, int64_t b, const T* bias, T* Y, int64_t ldy) {
  const bsr::VecIsa isa = bsr::select_vec_isa();
#if GNNSPARSE_HAVE_AVX2_PATH
  if (isa == bsr::VecIsa::Avx512) {
    // AVX-512 tilings exist where a block row slice fills whole zmm registers.
    if constexpr (std::is_same_v<T, float>) {
      switch (b) {
        case 16: return bsr_fwd_driver<T, 16, 2>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
        case 32: return bsr_fwd_driver<T, 32, 2>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
        default: break;
      }
    } else {
      switch (b) {
        case 8: return bsr_fwd_driver<T, 8, 2>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
        case 16: return bsr_fwd_driver<T, 16, 2>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
        case 32: return bsr_fwd_driver<T, 32, 2>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
        default: break;
      }
    }
  }
  if (isa != bsr::VecIsa::Generic) {
    switch (b) {
      case 4: return bsr_fwd_driver<T, 4, 1>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
      case 8: return bsr_fwd_driver<T, 8, 1>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
      case 16: return bsr_fwd_driver<T, 16, 1>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
      case 32: return bsr_fwd_driver<T, 32, 1>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
      default: break;
    }
  }
#endif
  (void)isa;
  switch (b) {
    case 4: return bsr_fwd_driver<T, 4, 0>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
    case 8: return bsr_fwd_driver<T, 8, 0>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
    case 16: return bsr_fwd_driver<T, 16, 0>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
    case 32: return bsr_fwd_driver<T, 32, 0>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
    default: return bsr_fwd_driver<T, 0, 0>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
  }
}

// ---------------------------------------------------------------------------
// Op implementations.
at::Tensor bsr_linear_cpu(const at::Tensor& x, const at::Tensor& crow_indices,
                          const at::Tensor& col_indices, const at::Tensor& values,
                          const std::optional<at::Tensor>& bias, int64_t out_features) {
  constexpr const char* op = "gnnsparse::bsr_linear";
  check_cpu(op, "x", x);
  check_dim(op, "x", x, 2);
  check_float_dtype(op, "x", x);
  check_cpu(op, "values", values);
  check_same_dtype(op, "values", values, "x", x);
  const int64_t b = bsr::blocksize_of(op, values);
  const int64_t N = x.size(0);
  const int64_t in_features = x.size(1);
  const at::Tensor crow = crow_indices.contiguous();
  const at::Tensor col = col_indices.contiguous();
  const at::Tensor vals = values.contiguous();
  check_bsr(op, crow, col, &vals, out_features, in_features, b, "out_features",
            "in_features = x.size(1)");
  at::Tensor bc;
  if (bias.has_value() && bias->defined()) {
    check_cpu(op, "bias", *bias);
    check_same_dtype(op, "bias", *bias, "x", x);
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == out_features, op,
                ": expected bias to have shape [out_features] = [", out_features, "], got ",
                bias->sizes());
    bc = bias->contiguous();
  }
  const at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty({N, out_features}, x.options());
  if (N == 0 || out_features == 0) return y;
  const int64_t nbr = out_features / b;
  const int64_t nnzb = col.size(0);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gnnsparse_bsr_linear", [&] {
    AlignedBuffer<scalar_t> packed(nnzb * b * b);
    bsr::pack_transposed<scalar_t>(vals.data_ptr<scalar_t>(), nnzb, b, packed.get());
    bsr_fwd_dispatch<scalar_t>(xc.data_ptr<scalar_t>(), N, in_features,
                               crow.data_ptr<int64_t>(), col.data_ptr<int64_t>(), packed.get(),
                               nbr, b, bc.defined() ? bc.data_ptr<scalar_t>() : nullptr,
                               y.data_ptr<scalar_t>(), out_features);
  });
  return y;
}

at::Tensor bsr_linear_backward_input_cpu(const at::Tensor& grad_out,
                                         const at::Tensor& crow_indices,
                                         const at::Tensor& col_indices,
                                         const at::Tensor& values, int64_t in_features) {
  constexpr const char* op = "gnnsparse::bsr_linear_backward_input";
  check_grad_and_values(op, grad_out, values);
  const int64_t b = bsr::blocksize_of(op, values);
  const int64_t N = grad_out.size(0);
  const int64_t out_features = grad_out.size(1);
  const at::Tensor crow = crow_indices.contiguous();
  const at::Tensor col = col_indices.contiguous();
  const at::Tensor vals = values.contiguous();
  check_bsr(op, crow, col, &vals, out_features, in_features, b,
            "out_features = grad_out.size(1)", "in_features");
  const at::Tensor g = grad_out.contiguous();
  at::Tensor dx = at::empty({N, in_features}, grad_out.options());
  if (N == 0 || in_features == 0) return dx;
  const int64_t nbr = out_features / b;
  const int64_t nbc = in_features / b;
  const int64_t nnzb = col.size(0);
  at::Tensor t_crow = at::empty({nbc + 1}, crow.options());
  at::Tensor t_col = at::empty({nnzb}, col.options());
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "gnnsparse_bsr_linear_backward_input", [&] {
    AlignedBuffer<scalar_t> packed(nnzb * b * b);
    bsr::transpose_blocks<scalar_t>(crow.data_ptr<int64_t>(), col.data_ptr<int64_t>(),
                                    vals.data_ptr<scalar_t>(), nbr, nbc, b,
                                    t_crow.data_ptr<int64_t>(), t_col.data_ptr<int64_t>(),
                                    packed.get());
    bsr_fwd_dispatch<scalar_t>(g.data_ptr<scalar_t>(), N, out_features,
                               t_crow.data_ptr<int64_t>(), t_col.data_ptr<int64_t>(),
                               packed.get(), nbc, b, nullptr, dx.data_ptr<scalar_t>(),
                               in_features);
  });
  return dx;
}

}  // namespace
}  // namespace cpu
}  // namespace gnnsparse

TORCH_LIBRARY_IMPL(gnnsparse, CPU, m) {
  m.impl("bsr_linear", &gnnsparse::cpu::bsr_linear_cpu);
  m.impl("bsr_linear_backward_input", &gnnsparse::cpu::bsr_linear_backward_input_cpu);
}
