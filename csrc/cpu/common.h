// Shared helpers for the gnnsparse CPU kernels: argument validation, ISA
// selection, node tiling/chunking, parallel loops and X-tile transposes.
//
// Layout conventions used by all kernels:
//   * a "node tile" is kTile = 32 consecutive rows (nodes) of a row-major
//     [N, F] matrix; it is transposed into a per-thread buffer T[F][kTile]
//     so that the inner loops vectorise across nodes;
//   * rows of a tile past N are zero-filled in the transposed buffer and never
//     written back.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define GNNSPARSE_X86 1
#else
#define GNNSPARSE_X86 0
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#if GNNSPARSE_X86 && (defined(__GNUC__) || defined(__clang__))
#define GNNSPARSE_HAVE_AVX2_PATH 1
#define GNNSPARSE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define GNNSPARSE_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))
#else
#define GNNSPARSE_HAVE_AVX2_PATH 0
#define GNNSPARSE_TARGET_AVX2
#define GNNSPARSE_TARGET_AVX512
#endif

namespace gnnsparse {
namespace cpu {

constexpr int64_t kTile = 32;  // nodes per tile (vector width of the kernels)

// Outputs of at least this many bytes are written with non-temporal (streaming) stores on the
// AVX2 path: they cannot stay in cache anyway, and streaming avoids reading every output line
// before writing it (measured here: 99%-sparse forward of X 65536x256 went from 12.4 to 6.9 ms).
constexpr int64_t kStreamBytes = int64_t(8) << 20;

// ---------------------------------------------------------------------------
// ISA selection (read at every call so tests can flip it).
//   GNNSPARSE_CPU_ISA unset/""/"auto": AVX2+FMA path when the CPU has it, and the AVX-512
//     versions of the kernels that have one when the CPU has AVX-512F.
//   GNNSPARSE_CPU_ISA=generic: portable path (compiler-vectorised, baseline ISA).
//   GNNSPARSE_CPU_ISA=avx2: AVX2 path only (no AVX-512), error if the CPU lacks AVX2/FMA.
//   GNNSPARSE_CPU_ISA=avx512: like auto, error if the CPU lacks AVX-512F.
// select_isa() reports Avx2 for auto/avx2/avx512 (kernels without an AVX-512 version use
// their AVX2 code); avx512_enabled() says whether AVX-512 versions may run.
enum class Isa { Generic, Avx2 };

inline bool cpu_has_avx2_fma() {
#if GNNSPARSE_HAVE_AVX2_PATH
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

inline bool cpu_has_avx512f() {
#if GNNSPARSE_HAVE_AVX2_PATH
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

inline Isa select_isa() {
  const char* env = std::getenv("GNNSPARSE_CPU_ISA");
  std::string v = env ? std::string(env) : std::string();
  if (v.empty() || v == "auto") {
    return cpu_has_avx2_fma() ? Isa::Avx2 : Isa::Generic;
  }
  if (v == "generic") {
    return Isa::Generic;
  }
  if (v == "avx2") {
    TORCH_CHECK(cpu_has_avx2_fma(),
                "GNNSPARSE_CPU_ISA=avx2 but this CPU/build has no AVX2+FMA path");
    return Isa::Avx2;
  }
  if (v == "avx512") {
    TORCH_CHECK(cpu_has_avx512f(),
                "GNNSPARSE_CPU_ISA=avx512 but this CPU/build has no AVX-512F path");
    return Isa::Avx2;
  }
  TORCH_CHECK(false, "GNNSPARSE_CPU_ISA must be one of 'auto', 'generic', 'avx2', 'avx512', got '",
              v, "'");
}

// Whether kernels with an AVX-512 version may use it (call after select_isa() == Avx2).
inline bool avx512_enabled() {
  const char* env = std::getenv("GNNSPARSE_CPU_ISA");
  const std::string v = env ? std::string(env) : std::string();
  return (v.empty() || v == "auto" || v == "avx512") && cpu_has_avx512f();
}

// ---------------------------------------------------------------------------
// Deterministic node chunking for reductions over nodes (SDDMM, bias grad).
// The chunk size depends only on the problem (N and the size of one chunk's partial
// result), never on the thread count, and chunk partial sums are reduced in chunk
// order, so results are bit-identical for any number of threads.
// At most 64 chunks of >= 256 nodes; fewer when the partial sums [nchunks, partial_elems]
// would exceed 64 MiB (very large nnz), but at least 2.
inline int64_t reduction_chunk_nodes(int64_t n, int64_t partial_bytes_per_chunk) {
  constexpr int64_t kMaxChunks = 64;
  constexpr int64_t kMinChunk = 256;  // multiple of kTile
  constexpr int64_t kPartialBudget = int64_t(64) << 20;
  int64_t max_chunks = kMaxChunks;
  if (partial_bytes_per_chunk > 0) {
    max_chunks = std::clamp<int64_t>(kPartialBudget / partial_bytes_per_chunk, 2, kMaxChunks);
  }
  int64_t c = (n + max_chunks - 1) / max_chunks;
  c = ((c + kTile - 1) / kTile) * kTile;
  return std::max(c, kMinChunk);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Elements of one transposed tile buffer T[features][kTile], padded to 64 bytes (16 floats).
inline int64_t tile_buffer_elems(int64_t features) { return ceil_div(features * kTile, 16) * 16; }

// Index of the calling thread inside an OpenMP parallel region (0 without OpenMP).
inline int current_thread() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Number of threads for an OpenMP region over `work_items` independent items.
inline int num_threads_for(int64_t work_items) {
  if (work_items <= 1 || at::in_parallel_region()) return 1;
  int64_t t = std::min<int64_t>(at::get_num_threads(), work_items);
  return static_cast<int>(std::max<int64_t>(t, 1));
}

// out[e] = sum over chunks k = 0..nchunks-1 of partial[k * stride + offset + e], e < count,
// added in chunk order (the fixed order that makes reductions thread-count independent);
// parallel over e, each element owned by one thread.
template <typename T>
void reduce_chunks(const T* partial, int64_t nchunks, int64_t stride, int64_t offset,
                   int64_t count, T* out) {
  const int nt = num_threads_for(ceil_div(count, 4096));
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t e = 0; e < count; ++e) {
    T s = partial[offset + e];
    for (int64_t k = 1; k < nchunks; ++k) s += partial[k * stride + offset + e];
    out[e] = s;
  }
}

// ---------------------------------------------------------------------------
// Validation helpers (messages name the op, the argument and expected/actual).
inline void check_cpu(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), op, ": expected ", name, " to be a CPU tensor, got device ",
              t.device());
}

inline void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t dim) {
  TORCH_CHECK(t.dim() == dim, op, ": expected ", name, " to be ", dim, "-D, got shape ",
              t.sizes());
}

inline void check_float_dtype(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op,
              ": expected ", name, " to have dtype float32 or float64, got ", t.scalar_type());
}

inline void check_same_dtype(const char* op, const char* name, const at::Tensor& t,
                             const char* ref_name, const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": expected ", name,
              " to have dtype ", ref.scalar_type(), " (same as ", ref_name, "), got ",
              t.scalar_type());
}

// The (grad_out [N, out], x [N, in]) pair of a weight-gradient op: CPU, 2-D, one float dtype,
// the same number of rows.
inline void check_grad_and_input(const char* op, const at::Tensor& grad_out, const at::Tensor& x) {
  check_cpu(op, "grad_out", grad_out);
  check_cpu(op, "x", x);
  check_dim(op, "grad_out", grad_out, 2);
  check_dim(op, "x", x, 2);
  check_float_dtype(op, "x", x);
  check_same_dtype(op, "grad_out", grad_out, "x", x);
  TORCH_CHECK(grad_out.size(0) == x.size(0), op,
              ": expected grad_out and x to have the same number of rows (nodes), got grad_out ",
              grad_out.sizes(), " and x ", x.sizes());
}

// The (grad_out [N, out], values) pair of an input-gradient op: CPU, 2-D grad_out, one float dtype.
inline void check_grad_and_values(const char* op, const at::Tensor& grad_out,
                                  const at::Tensor& values) {
  check_cpu(op, "grad_out", grad_out);
  check_dim(op, "grad_out", grad_out, 2);
  check_float_dtype(op, "grad_out", grad_out);
  check_cpu(op, "values", values);
  check_same_dtype(op, "values", values, "grad_out", grad_out);
}

// Validates a CSR structure of a [rows, cols] matrix:
//   crow: int64 [rows + 1], crow[0] == 0, non-decreasing, crow[rows] == nnz;
//   col: int64 [nnz] with entries in [0, cols).
// `values` (optional, may be undefined) must be 1-D [nnz].
// Expects crow/col to be contiguous already.
inline void check_csr(const char* op, const at::Tensor& crow, const at::Tensor& col,
                      const at::Tensor* values, int64_t rows, int64_t cols,
                      const char* rows_name, const char* cols_name) {
  check_cpu(op, "crow_indices", crow);
  check_cpu(op, "col_indices", col);
  TORCH_CHECK(crow.scalar_type() == at::kLong, op,
              ": expected crow_indices to have dtype int64, got ", crow.scalar_type());
  TORCH_CHECK(col.scalar_type() == at::kLong, op,
              ": expected col_indices to have dtype int64, got ", col.scalar_type());
  TORCH_CHECK(rows >= 0, op, ": expected ", rows_name, " >= 0, got ", rows);
  TORCH_CHECK(cols >= 0, op, ": expected ", cols_name, " >= 0, got ", cols);
  // crow.size(0) - 1 == rows, not size(0) == rows + 1: rows may be a huge (INT64_MAX) claim
  // (found by UBSan under tests/test_fuzz.py).
  TORCH_CHECK(crow.dim() == 1 && crow.size(0) - 1 == rows, op,
              ": expected crow_indices to have shape [", rows_name, " + 1] = [",
              static_cast<uint64_t>(rows) + 1, "], got ", crow.sizes());
  TORCH_CHECK(col.dim() == 1, op, ": expected col_indices to be 1-D [nnz], got shape ",
              col.sizes());
  const int64_t nnz = col.size(0);
  if (values != nullptr) {
    check_cpu(op, "values", *values);
    TORCH_CHECK(values->dim() == 1 && values->size(0) == nnz, op,
                ": expected values to have shape [nnz] = [", nnz,
                "] (nnz = len(col_indices)), got ", values->sizes());
  }
  const int64_t* cr = crow.data_ptr<int64_t>();
  TORCH_CHECK(cr[0] == 0, op, ": expected crow_indices[0] == 0, got ", cr[0]);
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(cr[r + 1] >= cr[r], op,
                ": crow_indices must be non-decreasing, but crow_indices[", r + 1, "] = ",
                cr[r + 1], " < crow_indices[", r, "] = ", cr[r]);
  }
  TORCH_CHECK(cr[rows] == nnz, op, ": expected crow_indices[", rows,
              "] (last) == nnz = len(col_indices) = ", nnz, ", got ", cr[rows]);
  const int64_t* ci = col.data_ptr<int64_t>();
  for (int64_t p = 0; p < nnz; ++p) {
    const int64_t c = ci[p];
    TORCH_CHECK(c >= 0 && c < cols, op, ": col_indices[", p, "] = ", c,
                " is out of range [0, ", cols, ") (", cols_name, " = ", cols, ")");
  }
}

// ---------------------------------------------------------------------------
// Tile transposes.
// load_tile_t: src is a row-major [nrows, F] block (row stride ld), nrows <= kTile;
// writes dst[F][kTile] with dst[f][j] = src[j][f], zero for j >= nrows.
template <typename T>
inline void load_tile_t_generic(const T* src, int64_t ld, int64_t nrows, int64_t F, T* dst) {
  if (nrows < kTile) {
    std::memset(dst, 0, sizeof(T) * F * kTile);
  }
  for (int64_t j = 0; j < nrows; ++j) {
    const T* s = src + j * ld;
    for (int64_t f = 0; f < F; ++f) dst[f * kTile + j] = s[f];
  }
}

// store_tile_t: src is [F][kTile] (transposed tile); writes dst[j][f] = src[f][j]
// for j < nrows (row stride ld).
template <typename T>
inline void store_tile_t_generic(const T* src, int64_t F, int64_t nrows, T* dst, int64_t ld) {
  for (int64_t j = 0; j < nrows; ++j) {
    T* d = dst + j * ld;
    for (int64_t f = 0; f < F; ++f) d[f] = src[f * kTile + j];
  }
}

#if GNNSPARSE_HAVE_AVX2_PATH
// 8x8 float transpose of r0..r7 in place.
GNNSPARSE_TARGET_AVX2 inline void transpose8x8_ps(__m256& r0, __m256& r1, __m256& r2,
                                                  __m256& r3, __m256& r4, __m256& r5,
                                                  __m256& r6, __m256& r7) {
  __m256 t0 = _mm256_unpacklo_ps(r0, r1);
  __m256 t1 = _mm256_unpackhi_ps(r0, r1);
  __m256 t2 = _mm256_unpacklo_ps(r2, r3);
  __m256 t3 = _mm256_unpackhi_ps(r2, r3);
  __m256 t4 = _mm256_unpacklo_ps(r4, r5);
  __m256 t5 = _mm256_unpackhi_ps(r4, r5);
  __m256 t6 = _mm256_unpacklo_ps(r6, r7);
  __m256 t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r0 = _mm256_permute2f128_ps(s0, s4, 0x20);
  r1 = _mm256_permute2f128_ps(s1, s5, 0x20);
  r2 = _mm256_permute2f128_ps(s2, s6, 0x20);
  r3 = _mm256_permute2f128_ps(s3, s7, 0x20);
  r4 = _mm256_permute2f128_ps(s0, s4, 0x31);
  r5 = _mm256_permute2f128_ps(s1, s5, 0x31);
  r6 = _mm256_permute2f128_ps(s2, s6, 0x31);
  r7 = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// 4x4 double transpose of r0..r3 in place.
GNNSPARSE_TARGET_AVX2 inline void transpose4x4_pd(__m256d& r0, __m256d& r1, __m256d& r2,
                                                  __m256d& r3) {
  __m256d t0 = _mm256_unpacklo_pd(r0, r1);
  __m256d t1 = _mm256_unpackhi_pd(r0, r1);
  __m256d t2 = _mm256_unpacklo_pd(r2, r3);
  __m256d t3 = _mm256_unpackhi_pd(r2, r3);
  r0 = _mm256_permute2f128_pd(t0, t2, 0x20);
  r1 = _mm256_permute2f128_pd(t1, t3, 0x20);
  r2 = _mm256_permute2f128_pd(t0, t2, 0x31);
  r3 = _mm256_permute2f128_pd(t1, t3, 0x31);
}

template <typename T>
GNNSPARSE_TARGET_AVX2 void load_tile_t_avx2(const T* src, int64_t ld, int64_t nrows, int64_t F,
                                            T* dst);
// stream: write full output lines with non-temporal stores when dst/ld/F allow it (callers
// pass true for outputs much larger than the caches; see kStreamBytes). The caller issues
// _mm_sfence() before other threads read the output.
template <typename T>
GNNSPARSE_TARGET_AVX2 void store_tile_t_avx2(const T* src, int64_t F, int64_t nrows, T* dst,
                                             int64_t ld, bool stream);

template <>
GNNSPARSE_TARGET_AVX2 inline void load_tile_t_avx2<float>(const float* src, int64_t ld,
                                                          int64_t nrows, int64_t F,
                                                          float* dst) {
  if (nrows < kTile) {
    load_tile_t_generic<float>(src, ld, nrows, F, dst);
    return;
  }
  const int64_t F8 = F & ~int64_t(7);
  for (int64_t j0 = 0; j0 < kTile; j0 += 8) {
    const float* s = src + j0 * ld;
    for (int64_t f = 0; f < F8; f += 8) {
      __m256 r0 = _mm256_loadu_ps(s + 0 * ld + f);
      __m256 r1 = _mm256_loadu_ps(s + 1 * ld + f);
      __m256 r2 = _mm256_loadu_ps(s + 2 * ld + f);
      __m256 r3 = _mm256_loadu_ps(s + 3 * ld + f);
      __m256 r4 = _mm256_loadu_ps(s + 4 * ld + f);
      __m256 r5 = _mm256_loadu_ps(s + 5 * ld + f);
      __m256 r6 = _mm256_loadu_ps(s + 6 * ld + f);
      __m256 r7 = _mm256_loadu_ps(s + 7 * ld + f);
      transpose8x8_ps(r0, r1, r2, r3, r4, r5, r6, r7);
      float* d = dst + f * kTile + j0;
      _mm256_store_ps(d + 0 * kTile, r0);
      _mm256_store_ps(d + 1 * kTile, r1);
      _mm256_store_ps(d + 2 * kTile, r2);
      _mm256_store_ps(d + 3 * kTile, r3);
      _mm256_store_ps(d + 4 * kTile, r4);
      _mm256_store_ps(d + 5 * kTile, r5);
      _mm256_store_ps(d + 6 * kTile, r6);
      _mm256_store_ps(d + 7 * kTile, r7);
    }
    for (int64_t j = j0; j < j0 + 8; ++j) {
      for (int64_t f = F8; f < F; ++f) dst[f * kTile + j] = src[j * ld + f];
    }
  }
}

template <>
GNNSPARSE_TARGET_AVX2 inline void load_tile_t_avx2<double>(const double* src, int64_t ld,
                                                           int64_t nrows, int64_t F,
                                                           double* dst) {
  if (nrows < kTile) {
    load_tile_t_generic<double>(src, ld, nrows, F, dst);
    return;
  }
  const int64_t F4 = F & ~int64_t(3);
  for (int64_t j0 = 0; j0 < kTile; j0 += 4) {
    const double* s = src + j0 * ld;
    for (int64_t f = 0; f < F4; f += 4) {
      __m256d r0 = _mm256_loadu_pd(s + 0 * ld + f);
      __m256d r1 = _mm256_loadu_pd(s + 1 * ld + f);
      __m256d r2 = _mm256_loadu_pd(s + 2 * ld + f);
      __m256d r3 = _mm256_loadu_pd(s + 3 * ld + f);
      transpose4x4_pd(r0, r1, r2, r3);
      double* d = dst + f * kTile + j0;
      _mm256_store_pd(d + 0 * kTile, r0);
      _mm256_store_pd(d + 1 * kTile, r1);
      _mm256_store_pd(d + 2 * kTile, r2);
      _mm256_store_pd(d + 3 * kTile, r3);
    }
    for (int64_t j = j0; j < j0 + 4; ++j) {
      for (int64_t f = F4; f < F; ++f) dst[f * kTile + j] = src[j * ld + f];
    }
  }
}

template <>
GNNSPARSE_TARGET_AVX2 inline void store_tile_t_avx2<float>(const float* src, int64_t F,
                                                           int64_t nrows, float* dst,
                                                           int64_t ld, bool stream) {
  if (nrows < kTile) {
    store_tile_t_generic<float>(src, F, nrows, dst, ld);
    return;
  }
  const int64_t F8 = F & ~int64_t(7);
  if (stream && reinterpret_cast<uintptr_t>(dst) % 64 == 0 && ld % 16 == 0 && F % 16 == 0) {
    // Whole 64-byte lines per row (two 8x8 blocks side by side) with non-temporal stores:
    // the output bypasses the caches and is not read before it is written.
    for (int64_t j0 = 0; j0 < kTile; j0 += 8) {
      for (int64_t f = 0; f < F; f += 16) {
        const float* s = src + f * kTile + j0;
        __m256 r0 = _mm256_load_ps(s + 0 * kTile);
        __m256 r1 = _mm256_load_ps(s + 1 * kTile);
        __m256 r2 = _mm256_load_ps(s + 2 * kTile);
        __m256 r3 = _mm256_load_ps(s + 3 * kTile);
        __m256 r4 = _mm256_load_ps(s + 4 * kTile);
        __m256 r5 = _mm256_load_ps(s + 5 * kTile);
        __m256 r6 = _mm256_load_ps(s + 6 * kTile);
        __m256 r7 = _mm256_load_ps(s + 7 * kTile);
        transpose8x8_ps(r0, r1, r2, r3, r4, r5, r6, r7);
        const float* s2 = s + 8 * kTile;
        __m256 q0 = _mm256_load_ps(s2 + 0 * kTile);
        __m256 q1 = _mm256_load_ps(s2 + 1 * kTile);
        __m256 q2 = _mm256_load_ps(s2 + 2 * kTile);
        __m256 q3 = _mm256_load_ps(s2 + 3 * kTile);
        __m256 q4 = _mm256_load_ps(s2 + 4 * kTile);
        __m256 q5 = _mm256_load_ps(s2 + 5 * kTile);
        __m256 q6 = _mm256_load_ps(s2 + 6 * kTile);
        __m256 q7 = _mm256_load_ps(s2 + 7 * kTile);
        transpose8x8_ps(q0, q1, q2, q3, q4, q5, q6, q7);
        float* d = dst + j0 * ld + f;
        _mm256_stream_ps(d + 0 * ld, r0); _mm256_stream_ps(d + 0 * ld + 8, q0);
        _mm256_stream_ps(d + 1 * ld, r1); _mm256_stream_ps(d + 1 * ld + 8, q1);
        _mm256_stream_ps(d + 2 * ld, r2); _mm256_stream_ps(d + 2 * ld + 8, q2);
        _mm256_stream_ps(d + 3 * ld, r3); _mm256_stream_ps(d + 3 * ld + 8, q3);
        _mm256_stream_ps(d + 4 * ld, r4); _mm256_stream_ps(d + 4 * ld + 8, q4);
        _mm256_stream_ps(d + 5 * ld, r5); _mm256_stream_ps(d + 5 * ld + 8, q5);
        _mm256_stream_ps(d + 6 * ld, r6); _mm256_stream_ps(d + 6 * ld + 8, q6);
        _mm256_stream_ps(d + 7 * ld, r7); _mm256_stream_ps(d + 7 * ld + 8, q7);
      }
    }
    return;
  }
  for (int64_t f = 0; f < F8; f += 8) {
    const float* s = src + f * kTile;
    for (int64_t j0 = 0; j0 < kTile; j0 += 8) {
      __m256 r0 = _mm256_load_ps(s + 0 * kTile + j0);
      __m256 r1 = _mm256_load_ps(s + 1 * kTile + j0);
      __m256 r2 = _mm256_load_ps(s + 2 * kTile + j0);
      __m256 r3 = _mm256_load_ps(s + 3 * kTile + j0);
      __m256 r4 = _mm256_load_ps(s + 4 * kTile + j0);
      __m256 r5 = _mm256_load_ps(s + 5 * kTile + j0);
      __m256 r6 = _mm256_load_ps(s + 6 * kTile + j0);
      __m256 r7 = _mm256_load_ps(s + 7 * kTile + j0);
      transpose8x8_ps(r0, r1, r2, r3, r4, r5, r6, r7);
      float* d = dst + j0 * ld + f;
      // (unaligned rows or a partial line: plain stores; streaming needs aligned full lines)
      _mm256_storeu_ps(d + 0 * ld, r0);
      _mm256_storeu_ps(d + 1 * ld, r1);
      _mm256_storeu_ps(d + 2 * ld, r2);
      _mm256_storeu_ps(d + 3 * ld, r3);
      _mm256_storeu_ps(d + 4 * ld, r4);
      _mm256_storeu_ps(d + 5 * ld, r5);
      _mm256_storeu_ps(d + 6 * ld, r6);
      _mm256_storeu_ps(d + 7 * ld, r7);
    }
  }
  for (int64_t j = 0; j < kTile; ++j) {
    for (int64_t f = F8; f < F; ++f) dst[j * ld + f] = src[f * kTile + j];
  }
}

template <>
GNNSPARSE_TARGET_AVX2 inline void store_tile_t_avx2<double>(const double* src, int64_t F,
                                                            int64_t nrows, double* dst,
                                                            int64_t ld, bool stream) {
  if (nrows < kTile) {
    store_tile_t_generic<double>(src, F, nrows, dst, ld);
    return;
  }
  if (stream && reinterpret_cast<uintptr_t>(dst) % 64 == 0 && ld % 8 == 0 && F % 8 == 0) {
    for (int64_t j0 = 0; j0 < kTile; j0 += 4) {
      for (int64_t f = 0; f < F; f += 8) {
        const double* s = src + f * kTile + j0;
        __m256d r0 = _mm256_load_pd(s + 0 * kTile);
        __m256d r1 = _mm256_load_pd(s + 1 * kTile);
        __m256d r2 = _mm256_load_pd(s + 2 * kTile);
        __m256d r3 = _mm256_load_pd(s + 3 * kTile);
        transpose4x4_pd(r0, r1, r2, r3);
        const double* s2 = s + 4 * kTile;
        __m256d q0 = _mm256_load_pd(s2 + 0 * kTile);
        __m256d q1 = _mm256_load_pd(s2 + 1 * kTile);
        __m256d q2 = _mm256_load_pd(s2 + 2 * kTile);
        __m256d q3 = _mm256_load_pd(s2 + 3 * kTile);
        transpose4x4_pd(q0, q1, q2, q3);
        double* d = dst + j0 * ld + f;
        _mm256_stream_pd(d + 0 * ld, r0); _mm256_stream_pd(d + 0 * ld + 4, q0);
        _mm256_stream_pd(d + 1 * ld, r1); _mm256_stream_pd(d + 1 * ld + 4, q1);
        _mm256_stream_pd(d + 2 * ld, r2); _mm256_stream_pd(d + 2 * ld + 4, q2);
        _mm256_stream_pd(d + 3 * ld, r3); _mm256_stream_pd(d + 3 * ld + 4, q3);
      }
    }
    return;
  }
  const int64_t F4 = F & ~int64_t(3);
  for (int64_t f = 0; f < F4; f += 4) {
    const double* s = src + f * kTile;
    for (int64_t j0 = 0; j0 < kTile; j0 += 4) {
      __m256d r0 = _mm256_load_pd(s + 0 * kTile + j0);
      __m256d r1 = _mm256_load_pd(s + 1 * kTile + j0);
      __m256d r2 = _mm256_load_pd(s + 2 * kTile + j0);
      __m256d r3 = _mm256_load_pd(s + 3 * kTile + j0);
      transpose4x4_pd(r0, r1, r2, r3);
      double* d = dst + j0 * ld + f;
      _mm256_storeu_pd(d + 0 * ld, r0);
      _mm256_storeu_pd(d + 1 * ld, r1);
      _mm256_storeu_pd(d + 2 * ld, r2);
      _mm256_storeu_pd(d + 3 * ld, r3);
    }
  }
  for (int64_t j = 0; j < kTile; ++j) {
    for (int64_t f = F4; f < F; ++f) dst[j * ld + f] = src[f * kTile + j];
  }
}
#endif  // GNNSPARSE_HAVE_AVX2_PATH

// ---------------------------------------------------------------------------
// CSR transpose (csr_transpose.cpp): structure of W^T and the entry permutation.
void csr_transpose_structure(const int64_t* crow, const int64_t* col, int64_t rows, int64_t cols,
                             int64_t* t_crow, int64_t* t_col, int64_t* perm);
// Checks that (t_crow, t_col, t_perm) is exactly the transpose of the validated CSR
// (crow, col) of a [rows, cols] matrix (O(nnz)); a stale cache raises instead of giving a
// wrong gradient.
void check_csr_transpose(const char* op, const at::Tensor& crow, const at::Tensor& col,
                         const at::Tensor& t_crow, const at::Tensor& t_col,
                         const at::Tensor& t_perm, int64_t rows, int64_t cols);

// ---------------------------------------------------------------------------
// Minimal 64-byte aligned scratch buffer (per thread).
template <typename T>
struct AlignedBuffer {
  T* ptr = nullptr;
  explicit AlignedBuffer(int64_t n) {
    size_t bytes = sizeof(T) * static_cast<size_t>(std::max<int64_t>(n, 1));
    bytes = (bytes + 63) / 64 * 64;
    ptr = static_cast<T*>(std::aligned_alloc(64, bytes));
    TORCH_CHECK(ptr != nullptr, "gnnsparse: failed to allocate ", bytes, " bytes of scratch");
  }
  ~AlignedBuffer() { std::free(ptr); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  T* get() const { return ptr; }
};

}  // namespace cpu
}  // namespace gnnsparse
