// Shared helpers of the block-sparse (BSR) weight kernels (bsr_linear.cpp, bsr_sddmm.cpp):
// BSR validation, block packing and the AVX2 vector traits / per-blocksize register tiling.
//
// BSR layout of W (out_features, in_features) with square b x b blocks:
//   crow_indices int64 [out_features / b + 1], col_indices int64 [nnzb] (block columns),
//   values [nnzb, b, b] with values[k, i, j] = W[br * b + i, col[k] * b + j].
#pragma once

#include "common.h"

#include <vector>

namespace gnnsparse {
namespace cpu {
namespace bsr {

// Validates a BSR structure of a [out_features, in_features] matrix with blocksize b:
//   b >= 1 divides both dims; crow/col form a valid CSR of the
//   [out_features / b, in_features / b] block matrix (see check_csr); `values` (optional)
//   is [nnzb, b, b] on the CPU. crow/col must be contiguous already.
inline void check_bsr(const char* op, const at::Tensor& crow, const at::Tensor& col,
                      const at::Tensor* values, int64_t out_features, int64_t in_features,
                      int64_t b, const char* out_name, const char* in_name) {
  TORCH_CHECK(b >= 1, op, ": expected blocksize >= 1, got ", b);
  TORCH_CHECK(out_features >= 0, op, ": expected ", out_name, " >= 0, got ", out_features);
  TORCH_CHECK(in_features >= 0, op, ": expected ", in_name, " >= 0, got ", in_features);
  TORCH_CHECK(out_features % b == 0, op, ": ", out_name, " = ", out_features,
              " is not divisible by blocksize ", b);
  TORCH_CHECK(in_features % b == 0, op, ": ", in_name, " = ", in_features,
              " is not divisible by blocksize ", b);
  check_csr(op, crow, col, nullptr, out_features / b, in_features / b,
            "out_features / blocksize", "in_features / blocksize");
  if (values != nullptr) {
    const int64_t nnzb = col.size(0);
    check_cpu(op, "values", *values);
    TORCH_CHECK(values->dim() == 3 && values->size(0) == nnzb && values->size(1) == b &&
                    values->size(2) == b,
                op, ": expected values to have shape [nnzb, blocksize, blocksize] = [", nnzb,
                ", ", b, ", ", b, "] (nnzb = len(col_indices)), got ", values->sizes());
  }
}

// Blocksize of a values tensor [nnzb, b, b] (checks it is 3-D with square blocks, b >= 1).
inline int64_t blocksize_of(const char* op, const at::Tensor& values) {
  TORCH_CHECK(values.dim() == 3, op,
              ": expected values to be 3-D [nnzb, blocksize, blocksize], got shape ",
              values.sizes());
  TORCH_CHECK(values.size(1) == values.size(2), op,
              ": expected values to hold square blocks [nnzb, b, b], got shape ", values.sizes());
  TORCH_CHECK(values.size(1) >= 1, op, ": expected blocksize >= 1, got values of shape ",
              values.sizes());
  return values.size(1);
}

// Packs every block transposed: P[k][j][i] = values[k][i][j] (forward: for each input
// column j of a block, the b outputs it feeds are contiguous).
template <typename T>
void pack_transposed(const T* values, int64_t nnzb, int64_t b, T* P) {
  const int64_t bb = b * b;
  for (int64_t k = 0; k < nnzb; ++k) {
    const T* v = values + k * bb;
    T* p = P + k * bb;
    for (int64_t i = 0; i < b; ++i)
      for (int64_t j = 0; j < b; ++j) p[j * b + i] = v[i * b + j];
  }
}

// Block transpose of a validated BSR with `rows` block rows and `cols` block columns:
// t_crow [cols + 1], t_col [nnzb] (original block row), and P[q] = values[k] (the block as
// stored: row i of it holds the in-feature outputs fed by out-feature i), q the position of
// block k in the transposed order. Within a block column, blocks keep their block-row order.
template <typename T>
void transpose_blocks(const int64_t* crow, const int64_t* col, const T* values, int64_t rows,
                      int64_t cols, int64_t b, int64_t* t_crow, int64_t* t_col, T* P) {
  const int64_t nnzb = crow[rows];
  const int64_t bb = b * b;
  std::fill(t_crow, t_crow + cols + 1, int64_t(0));
  for (int64_t k = 0; k < nnzb; ++k) t_crow[col[k] + 1] += 1;
  for (int64_t c = 0; c < cols; ++c) t_crow[c + 1] += t_crow[c];
  std::vector<int64_t> next(t_crow, t_crow + cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = crow[r]; k < crow[r + 1]; ++k) {
      const int64_t q = next[col[k]]++;
      t_col[q] = r;
      std::memcpy(P + q * bb, values + k * bb, sizeof(T) * bb);
    }
  }
}

// ---------------------------------------------------------------------------
// Vector ISA of the BSR forward / dX kernels. GNNSPARSE_CPU_ISA (common.h: select_isa) picks
// generic or a vector path; with "auto"/unset the BSR forward and dX kernels use AVX-512 on
// CPUs that have it (b = 16, 32 for float; 8, 16, 32 for double; otherwise AVX2), while
// GNNSPARSE_CPU_ISA=avx2 keeps them on AVX2. The SDDMM uses AVX2 in both cases.
enum class VecIsa { Generic, Avx2, Avx512 };

#if GNNSPARSE_HAVE_AVX2_PATH
#define GNNSPARSE_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))

inline bool cpu_has_avx512f() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && cpu_has_avx2_fma();
  }();
  return has;
}
#endif

inline VecIsa select_vec_isa() {
  if (select_isa() == Isa::Generic) return VecIsa::Generic;
#if GNNSPARSE_HAVE_AVX2_PATH
  const char* env = std::getenv("GNNSPARSE_CPU_ISA");
  const bool forced_avx2 = env != nullptr && std::string(env) == "avx2";
  return (!forced_avx2 && cpu_has_avx512f()) ? VecIsa::Avx512 : VecIsa::Avx2;
#else
  return VecIsa::Avx2;
#endif
}

#if GNNSPARSE_HAVE_AVX2_PATH
// ---------------------------------------------------------------------------
// Vector traits for the AVX2+FMA micro-kernels.
struct VF8 {  // 8 floats (ymm)
  using T = float;
  using R = __m256;
  static constexpr int W = 8;
  GNNSPARSE_TARGET_AVX2 static inline R zero() { return _mm256_setzero_ps(); }
  GNNSPARSE_TARGET_AVX2 static inline R load(const T* p) { return _mm256_loadu_ps(p); }
  GNNSPARSE_TARGET_AVX2 static inline void store(T* p, R v) { _mm256_storeu_ps(p, v); }
  GNNSPARSE_TARGET_AVX2 static inline void stream(T* p, R v) { _mm256_stream_ps(p, v); }
  GNNSPARSE_TARGET_AVX2 static inline R bcast(const T* p) { return _mm256_broadcast_ss(p); }
  GNNSPARSE_TARGET_AVX2 static inline R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  GNNSPARSE_TARGET_AVX2 static inline R add(R a, R b) { return _mm256_add_ps(a, b); }
};

struct VF4 {  // 4 floats (xmm, VEX encoded)
  using T = float;
  using R = __m128;
  static constexpr int W = 4;
  GNNSPARSE_TARGET_AVX2 static inline R zero() { return _mm_setzero_ps(); }
  GNNSPARSE_TARGET_AVX2 static inline R load(const T* p) { return _mm_loadu_ps(p); }
  GNNSPARSE_TARGET_AVX2 static inline void store(T* p, R v) { _mm_storeu_ps(p, v); }
  GNNSPARSE_TARGET_AVX2 static inline void stream(T* p, R v) { _mm_stream_ps(p, v); }
  GNNSPARSE_TARGET_AVX2 static inline R bcast(const T* p) { return _mm_broadcast_ss(p); }
  GNNSPARSE_TARGET_AVX2 static inline R fma(R a, R b, R c) { return _mm_fmadd_ps(a, b, c); }
  GNNSPARSE_TARGET_AVX2 static inline R add(R a, R b) { return _mm_add_ps(a, b); }
};

struct VD4 {  // 4 doubles (ymm)
  using T = double;
  using R = __m256d;
  static constexpr int W = 4;
  GNNSPARSE_TARGET_AVX2 static inline R zero() { return _mm256_setzero_pd(); }
  GNNSPARSE_TARGET_AVX2 static inline R load(const T* p) { return _mm256_loadu_pd(p); }
  GNNSPARSE_TARGET_AVX2 static inline void store(T* p, R v) { _mm256_storeu_pd(p, v); }
  GNNSPARSE_TARGET_AVX2 static inline void stream(T* p, R v) { _mm256_stream_pd(p, v); }
  GNNSPARSE_TARGET_AVX2 static inline R bcast(const T* p) { return _mm256_broadcast_sd(p); }
  GNNSPARSE_TARGET_AVX2 static inline R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  GNNSPARSE_TARGET_AVX2 static inline R add(R a, R b) { return _mm256_add_pd(a, b); }
};

struct VF16 {  // 16 floats (zmm)
  using T = float;
  using R = __m512;
  static constexpr int W = 16;
  GNNSPARSE_TARGET_AVX512 static inline R zero() { return _mm512_setzero_ps(); }
  GNNSPARSE_TARGET_AVX512 static inline R load(const T* p) { return _mm512_loadu_ps(p); }
  GNNSPARSE_TARGET_AVX512 static inline void store(T* p, R v) { _mm512_storeu_ps(p, v); }
  GNNSPARSE_TARGET_AVX512 static inline void stream(T* p, R v) { _mm512_stream_ps(p, v); }
  GNNSPARSE_TARGET_AVX512 static inline R bcast(const T* p) { return _mm512_set1_ps(*p); }
  GNNSPARSE_TARGET_AVX512 static inline R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  GNNSPARSE_TARGET_AVX512 static inline R add(R a, R b) { return _mm512_add_ps(a, b); }
};

struct VD8 {  // 8 doubles (zmm)
  using T = double;
  using R = __m512d;
  static constexpr int W = 8;
  GNNSPARSE_TARGET_AVX512 static inline R zero() { return _mm512_setzero_pd(); }
  GNNSPARSE_TARGET_AVX512 static inline R load(const T* p) { return _mm512_loadu_pd(p); }
  GNNSPARSE_TARGET_AVX512 static inline void store(T* p, R v) { _mm512_storeu_pd(p, v); }
  GNNSPARSE_TARGET_AVX512 static inline void stream(T* p, R v) { _mm512_stream_pd(p, v); }
  GNNSPARSE_TARGET_AVX512 static inline R bcast(const T* p) { return _mm512_set1_pd(*p); }
  GNNSPARSE_TARGET_AVX512 static inline R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  GNNSPARSE_TARGET_AVX512 static inline R add(R a, R b) { return _mm512_add_pd(a, b); }
};

// AVX-512 forward / dX tiling (32 zmm registers; broadcasts fold into the FMAs): only where a
// slice is whole zmm registers. Same fields as Cfg (RS/US unused).
template <typename T, int B>
struct Cfg512;
template <> struct Cfg512<float, 16>  { using V = VF16; static constexpr int VB = 1, NT = 8; };
template <> struct Cfg512<float, 32>  { using V = VF16; static constexpr int VB = 2, NT = 8; };
template <> struct Cfg512<double, 8>  { using V = VD8; static constexpr int VB = 1, NT = 8; };
template <> struct Cfg512<double, 16> { using V = VD8; static constexpr int VB = 2, NT = 8; };
template <> struct Cfg512<double, 32> { using V = VD8; static constexpr int VB = 2, NT = 8; };

// Register tiling per (dtype, blocksize), 16 ymm registers in all:
//   V: vector type; VB: vectors per output slice (a block row is B / (VB * W) slices);
//   NT: nodes per forward micro-tile (NT * VB accumulators, <= 12; 8 when VB = 1, as 12 row
//   pointers would spill general-purpose registers);
//   RS: block rows per SDDMM micro-tile (RS * VB accumulators); US: 2 = two accumulator
//   sets over alternating nodes (when RS * VB alone is too few chains to hide FMA latency).
template <typename T, int B>
struct Cfg;
template <> struct Cfg<float, 4>   { using V = VF4; static constexpr int VB = 1, NT = 8, RS = 4, US = 2; };
template <> struct Cfg<float, 8>   { using V = VF8; static constexpr int VB = 1, NT = 8, RS = 8, US = 1; };
template <> struct Cfg<float, 16>  { using V = VF8; static constexpr int VB = 2, NT = 6, RS = 6, US = 1; };
template <> struct Cfg<float, 32>  { using V = VF8; static constexpr int VB = 2, NT = 6, RS = 6, US = 1; };
template <> struct Cfg<double, 4>  { using V = VD4; static constexpr int VB = 1, NT = 8, RS = 4, US = 2; };
template <> struct Cfg<double, 8>  { using V = VD4; static constexpr int VB = 2, NT = 6, RS = 6, US = 1; };
template <> struct Cfg<double, 16> { using V = VD4; static constexpr int VB = 2, NT = 6, RS = 6, US = 1; };
template <> struct Cfg<double, 32> { using V = VD4; static constexpr int VB = 2, NT = 6, RS = 6, US = 1; };
#endif  // GNNSPARSE_HAVE_AVX2_PATH

}  // namespace bsr
}  // namespace cpu
}  // namespace gnnsparse
