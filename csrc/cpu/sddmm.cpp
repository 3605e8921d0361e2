// CPU kernel: csr_sddmm, the weight gradient at the stored positions of W:
//   dvalues[p] = sum_n grad_out[n, row(p)] * x[n, col(p)].
//
// Nodes are split into fixed-size chunks (size depends on N only, see
// reduction_chunk_nodes); chunks are distributed over threads with OpenMP
// schedule(static). Inside a chunk, tiles of 32 nodes of grad_out and x are
// transposed into per-thread buffers Gt[out][32] and Xt[in][32]; for each stored
// p the 32-wide dot product Gt[row(p)] . Xt[col(p)] is added to the chunk's
// partial sum partial[chunk][p]. Partials are reduced in chunk order, so the
// result is bit-identical for any thread count.
#include "common.h"

#include <ATen/ops/empty.h>
#include <torch/library.h>

namespace gnnsparse {
namespace cpu {
namespace {

template <typename T>
void sddmm_tile_generic(const T* __restrict Gt, const T* __restrict Xt,
                        const int64_t* __restrict crow, const int64_t* __restrict col,
                        int64_t rows, T* __restrict part) {
  constexpr int64_t L = 8;  // independent lanes, vectorisable without reassociation
  for (int64_t r = 0; r < rows; ++r) {
    const T* __restrict g = Gt + r * kTile;
    const int64_t pe = crow[r + 1];
    for (int64_t p = crow[r]; p < pe; ++p) {
      const T* __restrict x = Xt + col[p] * kTile;
      T acc[L];
      for (int64_t l = 0; l < L; ++l) acc[l] = g[l] * x[l];
      for (int64_t j = L; j < kTile; j += L) {
        for (int64_t l = 0; l < L; ++l) acc[l] += g[j + l] * x[j + l];
      }
      T s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
      part[p] += s;
    }
  }
}

#if GNNSPARSE_HAVE_AVX2_PATH
GNNSPARSE_TARGET_AVX2 inline float hsum8(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehdup_ps(lo);
  __m128 s = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, s);
  s = _mm_add_ss(s, sh);
  return _mm_cvtss_f32(s);
}

GNNSPARSE_TARGET_AVX2 inline double hsum4(__m256d v) {
  __m128d lo = _mm256_castpd256_pd128(v);
  __m128d hi = _mm256_extractf128_pd(v, 1);
  lo = _mm_add_pd(lo, hi);
  __m128d h = _mm_unpackhi_pd(lo, lo);
  return _mm_cvtsd_f64(_mm_add_sd(lo, h));
}

// 8 partial sums of the 32-wide dot product g . x (g in four registers).
GNNSPARSE_TARGET_AVX2 inline __m256 dot32_avx2(__m256 g0, __m256 g1, __m256 g2, __m256 g3,
                                              const float* x) {
  __m256 s = _mm256_mul_ps(g0, _mm256_load_ps(x + 0));
  __m256 t = _mm256_mul_ps(g2, _mm256_load_ps(x + 16));
  s = _mm256_fmadd_ps(g1, _mm256_load_ps(x + 8), s);
  t = _mm256_fmadd_ps(g3, _mm256_load_ps(x + 24), t);
  return _mm256_add_ps(s, t);
}

template <typename T>
GNNSPARSE_TARGET_AVX2 void sddmm_tile_avx2(const T* Gt, const T* Xt, const int64_t* crow,
                                           const int64_t* col, int64_t rows, T* part);

template <>
GNNSPARSE_TARGET_AVX2 void sddmm_tile_avx2<float>(const float* __restrict Gt,
                                                  const float* __restrict Xt,
                                                  const int64_t* __restrict crow,
                                                  const int64_t* __restrict col, int64_t rows,
                                                  float* __restrict part) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t pb = crow[r], pe = crow[r + 1];
    if (pb == pe) continue;
    const float* g = Gt + r * kTile;
    const __m256 g0 = _mm256_load_ps(g + 0);
    const __m256 g1 = _mm256_load_ps(g + 8);
    const __m256 g2 = _mm256_load_ps(g + 16);
    const __m256 g3 = _mm256_load_ps(g + 24);
#define GNNSPARSE_DOT32(p) dot32_avx2(g0, g1, g2, g3, Xt + col[p] * kTile)
    int64_t p = pb;
    // Eight dot products at a time, reduced together (one horizontal-add tree for 8 entries
    // instead of 8 separate horizontal sums).
    for (; p + 7 < pe; p += 8) {
      const __m256 s0 = GNNSPARSE_DOT32(p), s1 = GNNSPARSE_DOT32(p + 1);
      const __m256 s2 = GNNSPARSE_DOT32(p + 2), s3 = GNNSPARSE_DOT32(p + 3);
      const __m256 s4 = GNNSPARSE_DOT32(p + 4), s5 = GNNSPARSE_DOT32(p + 5);
      const __m256 s6 = GNNSPARSE_DOT32(p + 6), s7 = GNNSPARSE_DOT32(p + 7);
      const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(s0, s1), _mm256_hadd_ps(s2, s3));
      const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(s4, s5), _mm256_hadd_ps(s6, s7));
      const __m256 sums = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                                        _mm256_permute2f128_ps(u0, u1, 0x31));
      _mm256_storeu_ps(part + p, _mm256_add_ps(_mm256_loadu_ps(part + p), sums));
    }
    for (; p < pe; ++p) part[p] += hsum8(GNNSPARSE_DOT32(p));
#undef GNNSPARSE_DOT32
  }
}

template <>
GNNSPARSE_TARGET_AVX2 void sddmm_tile_avx2<double>(const double* __restrict Gt,
                                                   const double* __restrict Xt,
                                                   const int64_t* __restrict crow,
                                                   const int64_t* __restrict col, int64_t rows,
                                                   double* __restrict part) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t pb = crow[r], pe = crow[r + 1];
    if (pb == pe) continue;
    const double* g = Gt + r * kTile;
    const __m256d g0 = _mm256_load_pd(g + 0);
    const __m256d g1 = _mm256_load_pd(g + 4);
    const __m256d g2 = _mm256_load_pd(g + 8);
    const __m256d g3 = _mm256_load_pd(g + 12);
    const __m256d g4 = _mm256_load_pd(g + 16);
    const __m256d g5 = _mm256_load_pd(g + 20);
    const __m256d g6 = _mm256_load_pd(g + 24);
    const __m256d g7 = _mm256_load_pd(g + 28);
    for (int64_t p = pb; p < pe; ++p) {
      const double* x = Xt + col[p] * kTile;
      __m256d s = _mm256_mul_pd(g0, _mm256_load_pd(x + 0));
      __m256d t = _mm256_mul_pd(g4, _mm256_load_pd(x + 16));
      s = _mm256_fmadd_pd(g1, _mm256_load_pd(x + 4), s);
      t = _mm256_fmadd_pd(g5, _mm256_load_pd(x + 20), t);
      s = _mm256_fmadd_pd(g2, _mm256_load_pd(x + 8), s);
      t = _mm256_fmadd_pd(g6, _mm256_load_pd(x + 24), t);
      s = _mm256_fmadd_pd(g3, _mm256_load_pd(x + 12), s);
      t = _mm256_fmadd_pd(g7, _mm256_load_pd(x + 28), t);
      part[p] += hsum4(_mm256_add_pd(s, t));
    }
  }
}
#endif  // GNNSPARSE_HAVE_AVX2_PATH

template <typename T, bool kAvx2>
void sddmm_driver(const T* G, const T* X, int64_t N, int64_t rows, int64_t cols,
                  const int64_t* crow, const int64_t* col, int64_t nnz, T* out) {
  const int64_t chunk = reduction_chunk_nodes(N, nnz * static_cast<int64_t>(sizeof(T)));
  const int64_t nchunks = ceil_div(N, chunk);
  // Partial sums [nchunks, nnz]; with a single chunk write straight into `out`.
  AlignedBuffer<T> partial_buf(nchunks > 1 ? nchunks * nnz : 1);
  T* partial = nchunks > 1 ? partial_buf.get() : out;
  const int nt = num_threads_for(nchunks);
  const int64_t gt_elems = tile_buffer_elems(rows);
  const int64_t xt_elems = tile_buffer_elems(cols);
  const int64_t per_thread = gt_elems + xt_elems;
  AlignedBuffer<T> scratch(per_thread * nt);
#pragma omp parallel num_threads(nt)
  {
    const int tid = current_thread();
    T* gt = scratch.get() + tid * per_thread;
    T* xt = gt + gt_elems;
#pragma omp for schedule(static)
    for (int64_t k = 0; k < nchunks; ++k) {
      T* part = partial + k * nnz;
      std::fill(part, part + nnz, T(0));
      const int64_t nb = k * chunk;
      const int64_t ne = std::min<int64_t>(N, nb + chunk);
      for (int64_t n0 = nb; n0 < ne; n0 += kTile) {
        const int64_t nr = std::min<int64_t>(kTile, ne - n0);
        if constexpr (kAvx2) {
#if GNNSPARSE_HAVE_AVX2_PATH
          load_tile_t_avx2<T>(G + n0 * rows, rows, nr, rows, gt);
          load_tile_t_avx2<T>(X + n0 * cols, cols, nr, cols, xt);
          sddmm_tile_avx2<T>(gt, xt, crow, col, rows, part);
#endif
        } else {
          load_tile_t_generic<T>(G + n0 * rows, rows, nr, rows, gt);
          load_tile_t_generic<T>(X + n0 * cols, cols, nr, cols, xt);
          sddmm_tile_generic<T>(gt, xt, crow, col, rows, part);
        }
      }
    }
  }
  if (nchunks > 1) {
    // Fixed-order reduction over chunks, parallel over p (each p owned by one thread).
    const int nt2 = num_threads_for(ceil_div(nnz, 4096));
#pragma omp parallel for schedule(static) num_threads(nt2)
    for (int64_t p = 0; p < nnz; ++p) {
      T s = partial[p];
      for (int64_t k = 1; k < nchunks; ++k) s += partial[k * nnz + p];
      out[p] = s;
    }
  }
}

at::Tensor csr_sddmm_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                         const at::Tensor& crow_indices, const at::Tensor& col_indices) {
  constexpr const char* op = "gnnsparse::csr_sddmm";
  check_cpu(op, "grad_out", grad_out);
  check_cpu(op, "x", x);
  check_dim(op, "grad_out", grad_out, 2);
  check_dim(op, "x", x, 2);
  check_float_dtype(op, "x", x);
  check_same_dtype(op, "grad_out", grad_out, "x", x);
  TORCH_CHECK(grad_out.size(0) == x.size(0), op,
              ": expected grad_out and x to have the same number of rows (nodes), got grad_out ",
              grad_out.sizes(), " and x ", x.sizes());
  const int64_t N = x.size(0);
  const int64_t in_features = x.size(1);
  const int64_t out_features = grad_out.size(1);
  const at::Tensor crow = crow_indices.contiguous();
  const at::Tensor col = col_indices.contiguous();
  check_csr(op, crow, col, nullptr, out_features, in_features,
            "out_features = grad_out.size(1)", "in_features = x.size(1)");
  const int64_t nnz = col.size(0);
  at::Tensor out = at::empty({nnz}, x.options());
  if (nnz == 0) return out;
  if (N == 0) {
    out.zero_();
    return out;
  }
  const at::Tensor g = grad_out.contiguous();
  const at::Tensor xc = x.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gnnsparse_csr_sddmm", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    const int64_t* cr = crow.data_ptr<int64_t>();
    const int64_t* ci = col.data_ptr<int64_t>();
    scalar_t* op_ = out.data_ptr<scalar_t>();
#if GNNSPARSE_HAVE_AVX2_PATH
    if (select_isa() == Isa::Avx2) {
      sddmm_driver<scalar_t, true>(gp, xp, N, out_features, in_features, cr, ci, nnz, op_);
      return;
    }
#else
    (void)select_isa();
#endif
    sddmm_driver<scalar_t, false>(gp, xp, N, out_features, in_features, cr, ci, nnz, op_);
  });
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace gnnsparse

TORCH_LIBRARY_IMPL(gnnsparse, CPU, m) {
  m.impl("csr_sddmm", &gnnsparse::cpu::csr_sddmm_cpu);
}
