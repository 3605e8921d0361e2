// CPU kernel: bsr_sddmm, the weight gradient of a BSR weight at its stored blocks:
//   dvalues[k, i, j] = sum_n grad_out[n, br(k)*b + i] * x[n, col[k]*b + j].
//
// Nodes are split into fixed-size chunks (size depends on N and the partial size only, see
// reduction_chunk_nodes); chunks are distributed over threads with OpenMP schedule(static).
// Inside a chunk, sub-tiles of kSub nodes (L1 resident) are processed block by block: a slice
// of RS block rows x VB vectors of a block's partial sum stays in registers while the
// sub-tile's nodes are accumulated as outer products (broadcast of grad_out[n, br*b + i]
// times the contiguous vector x[n, col*b + j ..]). Chunk partial sums [nchunks, nnzb, b, b]
// are reduced in chunk order, so the result is bit-identical for any thread count. The next
// sub-tile's rows are prefetched into L2 while one is computed.
#include "bsr_common.h"

#include <ATen/ops/empty.h>
#include <torch/library.h>

namespace gnnsparse {
namespace cpu {
namespace {

constexpr int64_t kSub = 16;  // nodes per sub-tile inside a reduction chunk (L1 resident rows)

// ---------------------------------------------------------------------------
// Portable path: part[i][j] += sum_{n < nn} G[n, i] * X[n, j] for one block
// (G/X already offset to the block's row/column; B = 0 means run-time b).
template <typename T, int B>
void sddmm_block_generic(const T* __restrict G, int64_t ldg, const T* __restrict X, int64_t ldx,
                         int64_t nn, int64_t b_rt, T* __restrict part) {
  const int64_t b = B ? B : b_rt;
  for (int64_t n = 0; n < nn; ++n) {
    const T* __restrict g = G + n * ldg;
    const T* __restrict x = X + n * ldx;
    for (int64_t i = 0; i < b; ++i) {
      const T gi = g[i];
      T* __restrict pr = part + i * b;
      for (int64_t j = 0; j < b; ++j) pr[j] += gi * x[j];
    }
  }
}

template <typename T, int B>
void sddmm_sub_generic(const T* G, int64_t ldg, const T* X, int64_t ldx, int64_t nn,
                       const int64_t* crow, const int64_t* col, int64_t nbr, int64_t b,
                       T* part) {
  const int64_t bb = b * b;
  for (int64_t br = 0; br < nbr; ++br) {
    for (int64_t k = crow[br]; k < crow[br + 1]; ++k) {
      sddmm_block_generic<T, B>(G + br * b, ldg, X + col[k] * b, ldx, nn, b, part + k * bb);
    }
  }
}

#if GNNSPARSE_HAVE_AVX2_PATH
// AVX2 micro-kernel: RS rows x VB vectors of one block's partial sum, over nn nodes.
// G: grad_out at (first node, block row offset + first row of the slice);
// X: x at (first node, block column offset + first column of the slice);
// part: the partial block at (first row, first column of the slice), row stride B.
template <typename V, int B, int VB, int RS, int US>
GNNSPARSE_TARGET_AVX2 inline void sddmm_micro(const typename V::T* __restrict G, int64_t ldg,
                                              const typename V::T* __restrict X, int64_t ldx,
                                              int64_t nn, typename V::T* __restrict part) {
  using R = typename V::R;
  constexpr int W = V::W;
  R acc[US][RS][VB];
  #pragma GCC unroll 32
  for (int r = 0; r < RS; ++r)
    #pragma GCC unroll 32
    for (int v = 0; v < VB; ++v) {
      acc[0][r][v] = V::load(part + r * B + v * W);
      #pragma GCC unroll 32
      for (int u = 1; u < US; ++u) acc[u][r][v] = V::zero();
    }
  int64_t n = 0;
  for (; n + US <= nn; n += US) {
    #pragma GCC unroll 32
    for (int u = 0; u < US; ++u) {
      R xv[VB];
      #pragma GCC unroll 32
      for (int v = 0; v < VB; ++v) xv[v] = V::load(X + (n + u) * ldx + v * W);
      #pragma GCC unroll 32
      for (int r = 0; r < RS; ++r) {
        const R g = V::bcast(G + (n + u) * ldg + r);
        #pragma GCC unroll 32
        for (int v = 0; v < VB; ++v) acc[u][r][v] = V::fma(g, xv[v], acc[u][r][v]);
      }
    }
  }
  for (; n < nn; ++n) {
    R xv[VB];
    #pragma GCC unroll 32
    for (int v = 0; v < VB; ++v) xv[v] = V::load(X + n * ldx + v * W);
    #pragma GCC unroll 32
    for (int r = 0; r < RS; ++r) {
      const R g = V::bcast(G + n * ldg + r);
      #pragma GCC unroll 32
      for (int v = 0; v < VB; ++v) acc[0][r][v] = V::fma(g, xv[v], acc[0][r][v]);
    }
  }
  #pragma GCC unroll 32
  for (int r = 0; r < RS; ++r)
    #pragma GCC unroll 32
    for (int v = 0; v < VB; ++v) {
      R s = acc[0][r][v];
      #pragma GCC unroll 32
      for (int u = 1; u < US; ++u) s = V::add(s, acc[u][r][v]);
      V::store(part + r * B + v * W, s);
    }
}

// sddmm_micro for a run-time row count rs in [1, RS].
template <typename V, int B, int VB, int RS, int US>
GNNSPARSE_TARGET_AVX2 void sddmm_micro_tail(int rs, const typename V::T* G, int64_t ldg,
                                            const typename V::T* X, int64_t ldx, int64_t nn,
                                            typename V::T* part) {
  if constexpr (RS >= 1) {
    if (rs == RS) {
      sddmm_micro<V, B, VB, RS, US>(G, ldg, X, ldx, nn, part);
    } else {
      sddmm_micro_tail<V, B, VB, RS - 1, US>(rs, G, ldg, X, ldx, nn, part);
    }
  }
}

// One sub-tile of nn nodes (G/X at its first node) for all stored blocks. While computing,
// the next sub-tile's rows of G and X (pf_g / pf_x, pf_g_bytes / pf_x_bytes) are prefetched
// into L2, spread over the block rows.
template <typename T, int B>
GNNSPARSE_TARGET_AVX2 void sddmm_sub_avx2(const T* G, int64_t ldg, const T* X, int64_t ldx,
                                          int64_t nn, const int64_t* crow, const int64_t* col,
                                          int64_t nbr, T* part, const T* pf_g, int64_t pf_g_bytes,
                                          const T* pf_x, int64_t pf_x_bytes) {
  using C = bsr::Cfg<T, B>;
  using V = typename C::V;
  constexpr int S = C::VB * V::W;  // columns per slice
  static_assert(B % S == 0, "slice must divide the blocksize");
  const char* pg = reinterpret_cast<const char*>(pf_g);
  const char* px = reinterpret_cast<const char*>(pf_x);
  const int64_t g_lines = pf_g_bytes / 64, x_lines = pf_x_bytes / 64;
  int64_t g_done = 0, x_done = 0;
  for (int64_t br = 0; br < nbr; ++br) {
    for (const int64_t g_to = g_lines * (br + 1) / nbr; g_done < g_to; ++g_done)
      _mm_prefetch(pg + g_done * 64, _MM_HINT_T1);
    for (const int64_t x_to = x_lines * (br + 1) / nbr; x_done < x_to; ++x_done)
      _mm_prefetch(px + x_done * 64, _MM_HINT_T1);
    const T* gb = G + br * B;
    for (int64_t k = crow[br]; k < crow[br + 1]; ++k) {
      const T* xb = X + col[k] * B;
      T* pk = part + k * (B * B);
      for (int s0 = 0; s0 < B; s0 += S) {
        int r0 = 0;
        for (; r0 + C::RS <= B; r0 += C::RS) {
          sddmm_micro<V, B, C::VB, C::RS, C::US>(gb + r0, ldg, xb + s0, ldx, nn,
                                                 pk + r0 * B + s0);
        }
        if (r0 < B) {
          sddmm_micro_tail<V, B, C::VB, C::RS - 1, C::US>(B - r0, gb + r0, ldg, xb + s0, ldx,
                                                          nn, pk + r0 * B + s0);
        }
      }
    }
  }
}
#endif  // GNNSPARSE_HAVE_AVX2_PATH

template <typename T, int B, bool kAvx2>
void bsr_sddmm_driver(const T* G, const T* X, int64_t N, int64_t ldg, int64_t ldx,
                      const int64_t* crow, const int64_t* col, int64_t nbr, int64_t b,
                      int64_t nnzb, T* out) {
  const int64_t elems = nnzb * b * b;
  const int64_t chunk = reduction_chunk_nodes(N, elems * static_cast<int64_t>(sizeof(T)));
  const int64_t nchunks = ceil_div(N, chunk);
  // Partial sums [nchunks, nnzb * b * b]; with a single chunk write straight into `out`.
  AlignedBuffer<T> partial_buf(nchunks > 1 ? nchunks * elems : 1);
  T* partial = nchunks > 1 ? partial_buf.get() : out;
  const int nt = num_threads_for(nchunks);
  const int64_t sub = kSub;
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t c = 0; c < nchunks; ++c) {
    T* part = partial + c * elems;
    std::fill(part, part + elems, T(0));
    const int64_t nb = c * chunk;
    const int64_t ne = std::min<int64_t>(N, nb + chunk);
    for (int64_t n0 = nb; n0 < ne; n0 += sub) {
      const int64_t nn = std::min<int64_t>(sub, ne - n0);
      if constexpr (kAvx2) {
#if GNNSPARSE_HAVE_AVX2_PATH
        const int64_t p0 = std::min<int64_t>(ne, n0 + sub);
        const int64_t p1 = std::min<int64_t>(ne, p0 + sub);
        const int64_t pn = (p1 - p0) * static_cast<int64_t>(sizeof(T));
        sddmm_sub_avx2<T, B>(G + n0 * ldg, ldg, X + n0 * ldx, ldx, nn, crow, col, nbr, part,
                             G + p0 * ldg, pn * ldg, X + p0 * ldx, pn * ldx);
#endif
      } else {
        sddmm_sub_generic<T, B>(G + n0 * ldg, ldg, X + n0 * ldx, ldx, nn, crow, col, nbr, b,
                                part);
      }
    }
  }
  if (nchunks > 1) reduce_chunks<T>(partial, nchunks, elems, 0, elems, out);
}

template <typename T>
void bsr_sddmm_dispatch(const T* G, const T* X, int64_t N, int64_t ldg, int64_t ldx,
                        const int64_t* crow, const int64_t* col, int64_t nbr, int64_t b,
                        int64_t nnzb, T* out) {
  const Isa isa = select_isa();
#if GNNSPARSE_HAVE_AVX2_PATH
  if (isa == Isa::Avx2) {
    switch (b) {
      case 4: return bsr_sddmm_driver<T, 4, true>(G, X, N, ldg, ldx, crow, col, nbr, b, nnzb, out);
      case 8: return bsr_sddmm_driver<T, 8, true>(G, X, N, ldg, ldx, crow, col, nbr, b, nnzb, out);
      case 16: return bsr_sddmm_driver<T, 16, true>(G, X, N, ldg, ldx, crow, col, nbr, b, nnzb, out);
      case 32: return bsr_sddmm_driver<T, 32, true>(G, X, N, ldg, ldx, crow, col, nbr, b, nnzb, out);
      default: break;
    }
  }
#endif
  (void)isa;
  switch (b) {
    case 4: return bsr_sddmm_driver<T, 4, false>(G, X, N, ldg, ldx, crow, col, nbr, b, nnzb, out);
    case 8: return bsr_sddmm_driver<T, 8, false>(G, X, N, ldg, ldx, crow, col, nbr, b, nnzb, out);
    case 16: return bsr_sddmm_driver<T, 16, false>(G, X, N, ldg, ldx, crow, col, nbr, b, nnzb, out);
    case 32: return bsr_sddmm_driver<T, 32, false>(G, X, N, ldg, ldx, crow, col, nbr, b, nnzb, out);
    default: return bsr_sddmm_driver<T, 0, false>(G, X, N, ldg, ldx, crow, col, nbr, b, nnzb, out);
  }
}

at::Tensor bsr_sddmm_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                         const at::Tensor& crow_indices, const at::Tensor& col_indices,
                         int64_t blocksize) {
  constexpr const char* op = "gnnsparse::bsr_sddmm";
  check_grad_and_input(op, grad_out, x);
  const int64_t N = x.size(0);
  const int64_t in_features = x.size(1);
  const int64_t out_features = grad_out.size(1);
  const at::Tensor crow = crow_indices.contiguous();
  const at::Tensor col = col_indices.contiguous();
  bsr::check_bsr(op, crow, col, nullptr, out_features, in_features, blocksize,
                 "out_features = grad_out.size(1)", "in_features = x.size(1)");
  const int64_t b = blocksize;
  const int64_t nnzb = col.size(0);
  at::Tensor out = at::empty({nnzb, b, b}, x.options());
  if (nnzb == 0) return out;
  if (N == 0) {
    out.zero_();
    return out;
  }
  const at::Tensor g = grad_out.contiguous();
  const at::Tensor xc = x.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gnnsparse_bsr_sddmm", [&] {
    bsr_sddmm_dispatch<scalar_t>(g.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(), N,
                                 out_features, in_features, crow.data_ptr<int64_t>(),
                                 col.data_ptr<int64_t>(), out_features / b, b, nnzb,
                                 out.data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace gnnsparse

TORCH_LIBRARY_IMPL(gnnsparse, CPU, m) {
  m.impl("bsr_sddmm", &gnnsparse::cpu::bsr_sddmm_cpu);
}
