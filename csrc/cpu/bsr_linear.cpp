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
// Two paths: a portable one (compiler-vectorised over the b outputs of a block row, any b)
// and an AVX2+FMA one for b in {4, 8, 16, 32} chosen at run time (see common.h,
// GNNSPARSE_CPU_ISA); other blocksizes use the portable path.
#include "bsr_common.h"

#include <ATen/ops/empty.h>
#include <torch/library.h>

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
// ---------------------------------------------------------------------------
// AVX2 micro-kernel: NT nodes x one slice of VB vectors (outputs s0 .. s0 + VB*W of a block
// row). X: first node's row (ldx stride), cols/P: the blocks of the block row,
// bias/Y: already offset to the slice (Y: first node's row, ldy stride).
// All loops over the compile-time NT / VB / B are fully unrolled so that acc lives in
// NT * VB vector registers (GCC otherwise keeps the array on the stack).
template <typename V, int B, int VB, int NT, bool kStream>
GNNSPARSE_TARGET_AVX2 inline void fwd_micro(const typename V::T* __restrict X, int64_t ldx,
                                            const int64_t* __restrict cols,
                                            const typename V::T* __restrict P, int64_t nblk,
                                            int s0, const typename V::T* __restrict bias,
                                            typename V::T* __restrict Y, int64_t ldy) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  R acc[NT][VB];
  #pragma GCC unroll 32
  for (int v = 0; v < VB; ++v) {
    const R init = bias ? V::load(bias + v * W) : V::zero();
    #pragma GCC unroll 32
    for (int n = 0; n < NT; ++n) acc[n][v] = init;
  }
  for (int64_t q = 0; q < nblk; ++q) {
    // Opaque copy of ldx: stops the compiler from hoisting all NT * B addresses
    // x + n * ldx + j out of the block loop (they would be spilled); inside one block the
    // addresses are then NT row pointers plus immediate offsets.
    int64_t ld = ldx;
    asm("" : "+r"(ld));
    const T* __restrict xq = X + cols[q] * B;
    const T* __restrict pq = P + q * (B * B) + s0;
    #pragma GCC unroll 32
    for (int j = 0; j < B; ++j) {
      R w[VB];
      #pragma GCC unroll 32
      for (int v = 0; v < VB; ++v) w[v] = V::load(pq + j * B + v * W);
      #pragma GCC unroll 32
      for (int n = 0; n < NT; ++n) {
        const R xb = V::bcast(xq + n * ld + j);
        #pragma GCC unroll 32
        for (int v = 0; v < VB; ++v) acc[n][v] = V::fma(xb, w[v], acc[n][v]);
      }
    }
  }
  #pragma GCC unroll 32
  for (int n = 0; n < NT; ++n)
    #pragma GCC unroll 32
    for (int v = 0; v < VB; ++v) {
      if constexpr (kStream) {
        V::stream(Y + n * ldy + v * W, acc[n][v]);
      } else {
        V::store(Y + n * ldy + v * W, acc[n][v]);
      }
    }
}

// fwd_micro for a run-time node count nn in [1, NT].
template <typename V, int B, int VB, int NT>
GNNSPARSE_TARGET_AVX2 void fwd_micro_tail(int nn, const typename V::T* X, int64_t ldx,
                                          const int64_t* cols, const typename V::T* P,
                                          int64_t nblk, int s0, const typename V::T* bias,
                                          typename V::T* Y, int64_t ldy) {
  if constexpr (NT >= 1) {
    if (nn == NT) {
      fwd_micro<V, B, VB, NT, false>(X, ldx, cols, P, nblk, s0, bias, Y, ldy);
    } else {
      fwd_micro_tail<V, B, VB, NT - 1>(nn, X, ldx, cols, P, nblk, s0, bias, Y, ldy);
    }
  }
}

// All block rows for nn (<= Cfg::NT) nodes starting at X / Y. While computing, the
// pf_bytes bytes at pf (rows of a later tile of X) are prefetched into L2, spread over the
// block rows. kStream: full micro-tiles store Y with non-temporal stores (Y 32-byte aligned).
template <typename T, int B, bool kStream>
GNNSPARSE_TARGET_AVX2 void fwd_rows_avx2(const T* X, int64_t ldx, int64_t nn, const int64_t* crow,
                                         const int64_t* col, const T* P, int64_t nbr,
                                         const T* bias, T* Y, int64_t ldy, const T* pf,
                                         int64_t pf_bytes) {
  using C = bsr::Cfg<T, B>;
  using V = typename C::V;
  constexpr int S = C::VB * V::W;  // outputs per slice
  static_assert(B % S == 0, "slice must divide the blocksize");
  const char* pfc = reinterpret_cast<const char*>(pf);
  const int64_t pf_lines = pf_bytes / 64;
  int64_t pf_done = 0;
  for (int64_t br = 0; br < nbr; ++br) {
    const int64_t pf_to = pf_lines * (br + 1) / nbr;
    for (; pf_done < pf_to; ++pf_done) _mm_prefetch(pfc + pf_done * 64, _MM_HINT_T1);
    const int64_t kb = crow[br];
    const int64_t nblk = crow[br + 1] - kb;
    const int64_t* cols = col + kb;
    const T* pb = P + kb * (B * B);
    for (int s0 = 0; s0 < B; s0 += S) {
      const T* bs = bias ? bias + br * B + s0 : nullptr;
      T* ys = Y + br * B + s0;
      if (nn == C::NT) {
        fwd_micro<V, B, C::VB, C::NT, kStream>(X, ldx, cols, pb, nblk, s0, bs, ys, ldy);
      } else {
        fwd_micro_tail<V, B, C::VB, C::NT - 1>(static_cast<int>(nn), X, ldx, cols, pb, nblk,
                                               s0, bs, ys, ldy);
      }
    }
  }
}
#endif  // GNNSPARSE_HAVE_AVX2_PATH

// Y[N, nbr*b] = X[N, *] (block matrix P as packed)ᵀ (+ bias), parallel over node tiles.
template <typename T, int B, bool kAvx2>
void bsr_fwd_driver(const T* X, int64_t N, int64_t ldx, const int64_t* crow, const int64_t* col,
                    const T* P, int64_t nbr, int64_t b, const T* bias, T* Y, int64_t ldy) {
  int64_t tile = kGenericTile;
#if GNNSPARSE_HAVE_AVX2_PATH
  if constexpr (kAvx2) tile = bsr::Cfg<T, B>::NT;
#endif
  const int64_t ntiles = ceil_div(N, tile);
  if (ntiles == 0 || nbr == 0) return;
  const int nt = num_threads_for(ntiles);
#if GNNSPARSE_HAVE_AVX2_PATH
  // Non-temporal stores when Y is far larger than the caches (no read-for-ownership, no
  // eviction of X) and each micro-tile slice of a node is one or more whole cache lines
  // (partial-line non-temporal stores are slow).
  using C = bsr::Cfg<T, B ? B : 4>;
  constexpr int64_t slice_bytes = int64_t(C::VB) * C::V::W * sizeof(T);
  const bool stream = kAvx2 && slice_bytes % 64 == 0 &&
                      N * ldy * static_cast<int64_t>(sizeof(T)) >= kStreamBytes &&
                      reinterpret_cast<uintptr_t>(Y) % 64 == 0 &&
                      (ldy * static_cast<int64_t>(sizeof(T))) % 64 == 0;
#endif
#pragma omp parallel num_threads(nt)
  {
#pragma omp for schedule(static) nowait
  for (int64_t t = 0; t < ntiles; ++t) {
    const int64_t n0 = t * tile;
    const int64_t nn = std::min<int64_t>(tile, N - n0);
    if constexpr (kAvx2) {
#if GNNSPARSE_HAVE_AVX2_PATH
      const int64_t p0 = std::min<int64_t>(N, n0 + kPrefetchTiles * tile);
      const int64_t p1 = std::min<int64_t>(N, p0 + tile);
      const int64_t pf_bytes = (p1 - p0) * ldx * static_cast<int64_t>(sizeof(T));
      if (stream) {
        fwd_rows_avx2<T, B, true>(X + n0 * ldx, ldx, nn, crow, col, P, nbr, bias, Y + n0 * ldy,
                                  ldy, X + p0 * ldx, pf_bytes);
      } else {
        fwd_rows_avx2<T, B, false>(X + n0 * ldx, ldx, nn, crow, col, P, nbr, bias,
                                   Y + n0 * ldy, ldy, X + p0 * ldx, pf_bytes);
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
  const Isa isa = select_isa();
#if GNNSPARSE_HAVE_AVX2_PATH
  if (isa == Isa::Avx2) {
    switch (b) {
      case 4: return bsr_fwd_driver<T, 4, true>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
      case 8: return bsr_fwd_driver<T, 8, true>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
      case 16: return bsr_fwd_driver<T, 16, true>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
      case 32: return bsr_fwd_driver<T, 32, true>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
      default: break;
    }
  }
#endif
  (void)isa;
  switch (b) {
    case 4: return bsr_fwd_driver<T, 4, false>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
    case 8: return bsr_fwd_driver<T, 8, false>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
    case 16: return bsr_fwd_driver<T, 16, false>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
    case 32: return bsr_fwd_driver<T, 32, false>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
    default: return bsr_fwd_driver<T, 0, false>(X, N, ldx, crow, col, P, nbr, b, bias, Y, ldy);
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
  check_cpu(op, "grad_out", grad_out);
  check_dim(op, "grad_out", grad_out, 2);
  check_float_dtype(op, "grad_out", grad_out);
  check_cpu(op, "values", values);
  check_same_dtype(op, "values", values, "grad_out", grad_out);
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
