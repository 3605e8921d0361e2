// Per-tile compute kernels shared by the CSR ops (csr_linear.cpp, sddmm.cpp,
// csr_linear_backward.cpp). A tile is kTile = 32 nodes transposed into T[features][32]
// (see common.h).
//   fwd_tile_*:   Yt[r][j] = bias[r] + sum_{p in row r} values[p] * Xt[col(p)][j]
//                 (the SIMD versions take coff[p] = col(p) * kTile as 32-bit offsets and
//                 prefetch `pf_bytes` at `pf` (the next X tile) into L2 spread over the rows);
//   sddmm_tile_*: part[p] += sum_j Gt[row(p)][j] * Xt[col(p)][j].
// Included by several translation units (explicit specializations are inline).
#pragma once

#include "common.h"

#include <vector>

namespace gnnsparse {
namespace cpu {

// Rows of W padded to a multiple of kRowPad stored entries for the SIMD tile kernels, so that
// their unrolled inner loop can run without a remainder. Measured on the 2-core AVX-512
// development machine (X 65536x256, 50-99 % sparsity): padding to 4 or 8 gained nothing
// within noise, so rows are not padded (kRowPad = 1); the layout keeps the option.
// Padding entries have value 0 and point at an extra all-zero row `cols` of the transposed
// tile (Xt must have cols + 1 rows, the last one zero), so they add exactly 0 even when X
// holds inf/NaN. coff[p] = col(p) * kTile (32-bit element offsets into Xt).
constexpr int64_t kRowPad = 1;

template <typename T>
struct PaddedCsr {
  std::vector<int64_t> crow;
  std::vector<int32_t> coff;
  std::vector<T> val;
};

// vals may be indexed through perm (values of W^T = values[perm]); perm may be null.
template <typename T>
PaddedCsr<T> pad_csr(const int64_t* crow, const int64_t* col, const T* vals, const int64_t* perm,
                     int64_t rows, int64_t cols) {
  TORCH_CHECK(cols + 1 <= (int64_t(1) << 31) / kTile - 1, "gnnsparse: a dimension of W (", cols,
              ") is too large for the CPU kernels (max ", (int64_t(1) << 31) / kTile - 2, ")");
  PaddedCsr<T> out;
  out.crow.resize(static_cast<size_t>(rows + 1));
  out.crow[0] = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = crow[r + 1] - crow[r];
    out.crow[r + 1] = out.crow[r] + (n + kRowPad - 1) / kRowPad * kRowPad;
  }
  const size_t total = static_cast<size_t>(out.crow[rows]);
  out.coff.assign(total, static_cast<int32_t>(cols * kTile));
  out.val.assign(total, T(0));
  for (int64_t r = 0; r < rows; ++r) {
    int64_t q = out.crow[r];
    for (int64_t p = crow[r]; p < crow[r + 1]; ++p, ++q) {
      out.coff[q] = static_cast<int32_t>(col[p] * kTile);
      out.val[q] = perm ? vals[perm[p]] : vals[p];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Per-tile compute: Yt[r][j] = bias[r] + sum_p values[p] * Xt[col[p]][j].
template <typename T>
void fwd_tile_generic(const T* __restrict Xt, const int64_t* __restrict crow,
                      const int64_t* __restrict col, const T* __restrict val,
                      const T* __restrict bias, int64_t rows, T* __restrict Yt) {
  for (int64_t r = 0; r < rows; ++r) {
    T acc[kTile];
    const T b = bias ? bias[r] : T(0);
    for (int64_t j = 0; j < kTile; ++j) acc[j] = b;
    const int64_t pe = crow[r + 1];
    for (int64_t p = crow[r]; p < pe; ++p) {
      const T v = val[p];
      const T* __restrict xr = Xt + col[p] * kTile;
      for (int64_t j = 0; j < kTile; ++j) acc[j] += v * xr[j];
    }
    T* yr = Yt + r * kTile;
    for (int64_t j = 0; j < kTile; ++j) yr[j] = acc[j];
  }
}

#if GNNSPARSE_HAVE_AVX2_PATH
template <typename T>
GNNSPARSE_TARGET_AVX2 void fwd_tile_avx2(const T* Xt, const int64_t* crow, const int32_t* coff,
                                         const T* val, const T* bias, int64_t rows, T* Yt,
                                         const char* pf, int64_t pf_bytes);

// float: 32 nodes = 4 ymm; two accumulator sets (even/odd p) hide FMA latency.
template <>
GNNSPARSE_TARGET_AVX2 inline void fwd_tile_avx2<float>(const float* __restrict Xt,
                                                const int64_t* __restrict crow,
                                                const int32_t* __restrict coff,
                                                const float* __restrict val,
                                                const float* __restrict bias, int64_t rows,
                                                float* __restrict Yt, const char* pf,
                                                int64_t pf_bytes) {
  const int64_t lines = pf_bytes / 64;
  const int64_t per_row = ceil_div(lines, std::max<int64_t>(rows, 1));  // spread over the rows
  int64_t next_line = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t upto = std::min(lines, next_line + per_row);
    for (; next_line < upto; ++next_line) _mm_prefetch(pf + next_line * 64, _MM_HINT_T1);
    __m256 a0 = bias ? _mm256_set1_ps(bias[r]) : _mm256_setzero_ps();
    __m256 a1 = a0, a2 = a0, a3 = a0;
    __m256 b0 = _mm256_setzero_ps(), b1 = b0, b2 = b0, b3 = b0;
    int64_t p = crow[r];
    const int64_t pe = crow[r + 1];
    for (; p + 1 < pe; p += 2) {
      const __m256 v = _mm256_set1_ps(val[p]);
      const __m256 w = _mm256_set1_ps(val[p + 1]);
      const float* xr = Xt + coff[p];
      const float* xs = Xt + coff[p + 1];
      a0 = _mm256_fmadd_ps(v, _mm256_load_ps(xr + 0), a0);
      a1 = _mm256_fmadd_ps(v, _mm256_load_ps(xr + 8), a1);
      a2 = _mm256_fmadd_ps(v, _mm256_load_ps(xr + 16), a2);
      a3 = _mm256_fmadd_ps(v, _mm256_load_ps(xr + 24), a3);
      b0 = _mm256_fmadd_ps(w, _mm256_load_ps(xs + 0), b0);
      b1 = _mm256_fmadd_ps(w, _mm256_load_ps(xs + 8), b1);
      b2 = _mm256_fmadd_ps(w, _mm256_load_ps(xs + 16), b2);
      b3 = _mm256_fmadd_ps(w, _mm256_load_ps(xs + 24), b3);
    }
    if (p < pe) {
      const __m256 v = _mm256_set1_ps(val[p]);
      const float* xr = Xt + coff[p];
      a0 = _mm256_fmadd_ps(v, _mm256_load_ps(xr + 0), a0);
      a1 = _mm256_fmadd_ps(v, _mm256_load_ps(xr + 8), a1);
      a2 = _mm256_fmadd_ps(v, _mm256_load_ps(xr + 16), a2);
      a3 = _mm256_fmadd_ps(v, _mm256_load_ps(xr + 24), a3);
    }
    float* yr = Yt + r * kTile;
    _mm256_store_ps(yr + 0, _mm256_add_ps(a0, b0));
    _mm256_store_ps(yr + 8, _mm256_add_ps(a1, b1));
    _mm256_store_ps(yr + 16, _mm256_add_ps(a2, b2));
    _mm256_store_ps(yr + 24, _mm256_add_ps(a3, b3));
  }
}

// double: 32 nodes = 8 ymm, eight independent FMA chains.
template <>
GNNSPARSE_TARGET_AVX2 inline void fwd_tile_avx2<double>(const double* __restrict Xt,
                                                 const int64_t* __restrict crow,
                                                 const int32_t* __restrict coff,
                                                 const double* __restrict val,
                                                 const double* __restrict bias, int64_t rows,
                                                 double* __restrict Yt, const char* pf,
                                                 int64_t pf_bytes) {
  const int64_t lines = pf_bytes / 64;
  const int64_t per_row = ceil_div(lines, std::max<int64_t>(rows, 1));  // spread over the rows
  int64_t next_line = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t upto = std::min(lines, next_line + per_row);
    for (; next_line < upto; ++next_line) _mm_prefetch(pf + next_line * 64, _MM_HINT_T1);
    __m256d a0 = bias ? _mm256_set1_pd(bias[r]) : _mm256_setzero_pd();
    __m256d a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    const int64_t pe = crow[r + 1];
    for (int64_t p = crow[r]; p < pe; ++p) {
      const __m256d v = _mm256_set1_pd(val[p]);
      const double* xr = Xt + coff[p];
      a0 = _mm256_fmadd_pd(v, _mm256_load_pd(xr + 0), a0);
      a1 = _mm256_fmadd_pd(v, _mm256_load_pd(xr + 4), a1);
      a2 = _mm256_fmadd_pd(v, _mm256_load_pd(xr + 8), a2);
      a3 = _mm256_fmadd_pd(v, _mm256_load_pd(xr + 12), a3);
      a4 = _mm256_fmadd_pd(v, _mm256_load_pd(xr + 16), a4);
      a5 = _mm256_fmadd_pd(v, _mm256_load_pd(xr + 20), a5);
      a6 = _mm256_fmadd_pd(v, _mm256_load_pd(xr + 24), a6);
      a7 = _mm256_fmadd_pd(v, _mm256_load_pd(xr + 28), a7);
    }
    double* yr = Yt + r * kTile;
    _mm256_store_pd(yr + 0, a0);
    _mm256_store_pd(yr + 4, a1);
    _mm256_store_pd(yr + 8, a2);
    _mm256_store_pd(yr + 12, a3);
    _mm256_store_pd(yr + 16, a4);
    _mm256_store_pd(yr + 20, a5);
    _mm256_store_pd(yr + 24, a6);
    _mm256_store_pd(yr + 28, a7);
  }
}

// AVX-512 versions of the tile compute (same tile layout and transposes as AVX2): 32 float
// nodes are 2 zmm; four nnz per step into four accumulator pairs (8 independent FMA chains).
template <typename T>
GNNSPARSE_TARGET_AVX512 void fwd_tile_avx512(const T* Xt, const int64_t* crow,
                                             const int32_t* coff, const T* val, const T* bias,
                                             int64_t rows, T* Yt, const char* pf,
                                             int64_t pf_bytes);

template <>
GNNSPARSE_TARGET_AVX512 inline void fwd_tile_avx512<float>(const float* __restrict Xt,
                                                    const int64_t* __restrict crow,
                                                    const int32_t* __restrict coff,
                                                    const float* __restrict val,
                                                    const float* __restrict bias, int64_t rows,
                                                    float* __restrict Yt, const char* pf,
                                                    int64_t pf_bytes) {
  const int64_t lines = pf_bytes / 64;
  const int64_t per_row = ceil_div(lines, std::max<int64_t>(rows, 1));  // spread over the rows
  int64_t next_line = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t upto = std::min(lines, next_line + per_row);
    for (; next_line < upto; ++next_line) _mm_prefetch(pf + next_line * 64, _MM_HINT_T1);
    __m512 a0 = bias ? _mm512_set1_ps(bias[r]) : _mm512_setzero_ps();
    __m512 a1 = a0;
    __m512 b0 = _mm512_setzero_ps(), b1 = b0, c0 = b0, c1 = b0, d0 = b0, d1 = b0;
    int64_t p = crow[r];
    const int64_t pe = crow[r + 1];
    for (; p + 3 < pe; p += 4) {
      const float* x0 = Xt + coff[p];
      const float* x1 = Xt + coff[p + 1];
      const float* x2 = Xt + coff[p + 2];
      const float* x3 = Xt + coff[p + 3];
      const __m512 v0 = _mm512_set1_ps(val[p]);
      const __m512 v1 = _mm512_set1_ps(val[p + 1]);
      const __m512 v2 = _mm512_set1_ps(val[p + 2]);
      const __m512 v3 = _mm512_set1_ps(val[p + 3]);
      a0 = _mm512_fmadd_ps(v0, _mm512_load_ps(x0), a0);
      a1 = _mm512_fmadd_ps(v0, _mm512_load_ps(x0 + 16), a1);
      b0 = _mm512_fmadd_ps(v1, _mm512_load_ps(x1), b0);
      b1 = _mm512_fmadd_ps(v1, _mm512_load_ps(x1 + 16), b1);
      c0 = _mm512_fmadd_ps(v2, _mm512_load_ps(x2), c0);
      c1 = _mm512_fmadd_ps(v2, _mm512_load_ps(x2 + 16), c1);
      d0 = _mm512_fmadd_ps(v3, _mm512_load_ps(x3), d0);
      d1 = _mm512_fmadd_ps(v3, _mm512_load_ps(x3 + 16), d1);
    }
    for (; p < pe; ++p) {
      const float* x0 = Xt + coff[p];
      const __m512 v0 = _mm512_set1_ps(val[p]);
      a0 = _mm512_fmadd_ps(v0, _mm512_load_ps(x0), a0);
      a1 = _mm512_fmadd_ps(v0, _mm512_load_ps(x0 + 16), a1);
    }
    float* yr = Yt + r * kTile;
    _mm512_store_ps(yr, _mm512_add_ps(_mm512_add_ps(a0, b0), _mm512_add_ps(c0, d0)));
    _mm512_store_ps(yr + 16, _mm512_add_ps(_mm512_add_ps(a1, b1), _mm512_add_ps(c1, d1)));
  }
}

// double: 32 nodes = 4 zmm; two nnz per step into two accumulator sets (8 chains).
template <>
GNNSPARSE_TARGET_AVX512 inline void fwd_tile_avx512<double>(const double* __restrict Xt,
                                                     const int64_t* __restrict crow,
                                                     const int32_t* __restrict coff,
                                                     const double* __restrict val,
                                                     const double* __restrict bias, int64_t rows,
                                                     double* __restrict Yt, const char* pf,
                                                     int64_t pf_bytes) {
  const int64_t lines = pf_bytes / 64;
  const int64_t per_row = ceil_div(lines, std::max<int64_t>(rows, 1));  // spread over the rows
  int64_t next_line = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t upto = std::min(lines, next_line + per_row);
    for (; next_line < upto; ++next_line) _mm_prefetch(pf + next_line * 64, _MM_HINT_T1);
    __m512d a0 = bias ? _mm512_set1_pd(bias[r]) : _mm512_setzero_pd();
    __m512d a1 = a0, a2 = a0, a3 = a0;
    __m512d b0 = _mm512_setzero_pd(), b1 = b0, b2 = b0, b3 = b0;
    int64_t p = crow[r];
    const int64_t pe = crow[r + 1];
    for (; p + 1 < pe; p += 2) {
      const double* x0 = Xt + coff[p];
      const double* x1 = Xt + coff[p + 1];
      const __m512d v0 = _mm512_set1_pd(val[p]);
      const __m512d v1 = _mm512_set1_pd(val[p + 1]);
      a0 = _mm512_fmadd_pd(v0, _mm512_load_pd(x0), a0);
      a1 = _mm512_fmadd_pd(v0, _mm512_load_pd(x0 + 8), a1);
      a2 = _mm512_fmadd_pd(v0, _mm512_load_pd(x0 + 16), a2);
      a3 = _mm512_fmadd_pd(v0, _mm512_load_pd(x0 + 24), a3);
      b0 = _mm512_fmadd_pd(v1, _mm512_load_pd(x1), b0);
      b1 = _mm512_fmadd_pd(v1, _mm512_load_pd(x1 + 8), b1);
      b2 = _mm512_fmadd_pd(v1, _mm512_load_pd(x1 + 16), b2);
      b3 = _mm512_fmadd_pd(v1, _mm512_load_pd(x1 + 24), b3);
    }
    if (p < pe) {
      const double* x0 = Xt + coff[p];
      const __m512d v0 = _mm512_set1_pd(val[p]);
      a0 = _mm512_fmadd_pd(v0, _mm512_load_pd(x0), a0);
      a1 = _mm512_fmadd_pd(v0, _mm512_load_pd(x0 + 8), a1);
      a2 = _mm512_fmadd_pd(v0, _mm512_load_pd(x0 + 16), a2);
      a3 = _mm512_fmadd_pd(v0, _mm512_load_pd(x0 + 24), a3);
    }
    double* yr = Yt + r * kTile;
    _mm512_store_pd(yr, _mm512_add_pd(a0, b0));
    _mm512_store_pd(yr + 8, _mm512_add_pd(a1, b1));
    _mm512_store_pd(yr + 16, _mm512_add_pd(a2, b2));
    _mm512_store_pd(yr + 24, _mm512_add_pd(a3, b3));
  }
}
#endif  // GNNSPARSE_HAVE_AVX2_PATH

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
GNNSPARSE_TARGET_AVX2 inline void sddmm_tile_avx2<float>(const float* __restrict Gt,
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
GNNSPARSE_TARGET_AVX2 inline void sddmm_tile_avx2<double>(const double* __restrict Gt,
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

// GCC 12's AVX-512 cast intrinsics read an "undefined" register it then flags as maybe
// uninitialized once inlined; the value is fully overwritten, so the warning is silenced here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// AVX-512 SDDMM tile: the 32-node row of Gt in two zmm; each dot product folds 16 lanes to 8
// and eight of them share one horizontal-add tree (as in the AVX2 version). double uses AVX2.
GNNSPARSE_TARGET_AVX512 inline __m256 dot32_avx512(__m512 g0, __m512 g1, const float* x) {
  __m512 s = _mm512_mul_ps(g0, _mm512_load_ps(x));
  s = _mm512_fmadd_ps(g1, _mm512_load_ps(x + 16), s);
  const __m512 hi = _mm512_shuffle_f32x4(s, s, _MM_SHUFFLE(3, 2, 3, 2));  // upper 8 lanes
  return _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_castps512_ps256(hi));
}

template <typename T>
GNNSPARSE_TARGET_AVX512 void sddmm_tile_avx512(const T* Gt, const T* Xt, const int64_t* crow,
                                               const int64_t* col, int64_t rows, T* part) {
  sddmm_tile_avx2<T>(Gt, Xt, crow, col, rows, part);
}

template <>
GNNSPARSE_TARGET_AVX512 inline void sddmm_tile_avx512<float>(const float* __restrict Gt,
                                                      const float* __restrict Xt,
                                                      const int64_t* __restrict crow,
                                                      const int64_t* __restrict col, int64_t rows,
                                                      float* __restrict part) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t pb = crow[r], pe = crow[r + 1];
    if (pb == pe) continue;
    const float* g = Gt + r * kTile;
    const __m512 g0 = _mm512_load_ps(g);
    const __m512 g1 = _mm512_load_ps(g + 16);
    int64_t p = pb;
    for (; p + 7 < pe; p += 8) {
      const __m256 s0 = dot32_avx512(g0, g1, Xt + col[p] * kTile);
      const __m256 s1 = dot32_avx512(g0, g1, Xt + col[p + 1] * kTile);
      const __m256 s2 = dot32_avx512(g0, g1, Xt + col[p + 2] * kTile);
      const __m256 s3 = dot32_avx512(g0, g1, Xt + col[p + 3] * kTile);
      const __m256 s4 = dot32_avx512(g0, g1, Xt + col[p + 4] * kTile);
      const __m256 s5 = dot32_avx512(g0, g1, Xt + col[p + 5] * kTile);
      const __m256 s6 = dot32_avx512(g0, g1, Xt + col[p + 6] * kTile);
      const __m256 s7 = dot32_avx512(g0, g1, Xt + col[p + 7] * kTile);
      const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(s0, s1), _mm256_hadd_ps(s2, s3));
      const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(s4, s5), _mm256_hadd_ps(s6, s7));
      const __m256 sums = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                                        _mm256_permute2f128_ps(u0, u1, 0x31));
      _mm256_storeu_ps(part + p, _mm256_add_ps(_mm256_loadu_ps(part + p), sums));
    }
    for (; p < pe; ++p) part[p] += hsum8(dot32_avx512(g0, g1, Xt + col[p] * kTile));
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // GNNSPARSE_HAVE_AVX2_PATH

}  // namespace cpu
}  // namespace gnnsparse
