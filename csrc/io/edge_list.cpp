// Edge-list text parsing and id compaction for gnnsparse.data.ingest (CPU only, single thread).
//
// These are I/O helpers, not weight-layer kernels: they have no CUDA/Triton/reference
// counterparts and are registered for the CompositeExplicitAutograd key (so a tensor on
// another device reaches the argument checks below and gets a clear error instead of a
// dispatcher "no kernel" error). Calls through torch.ops release the GIL while the op runs,
// so the Python side can decompress the next chunk in another thread meanwhile.
//
// gnnsparse::parse_edge_chunk(Tensor buf, int ncols)
//     -> (Tensor src, Tensor dst, Tensor t, int ncols, int lines, int first_data_line)
//
//   buf: uint8, 1-D, contiguous, CPU: whole text lines (normally ending with '\n'; a last
//   line without '\n' is parsed as a line too). ncols: column count fixed by an earlier
//   chunk, or 0 if no data line was seen yet.
//
//   Accepted (anything else returns ncols = -1, "fall back", with empty tensors, and the
//   caller parses the chunk with its validating Python parser, which produces the error
//   message or the value):
//     * whitespace: ' ', '\t', '\v', '\f', '\r' (as Python's bytes.split); '\n' ends a line;
//     * blank lines; comment lines whose first non-blank byte is '#' (any bytes but NUL);
//     * data lines of 1..18-digit unsigned decimal tokens ("007" is 7), 2 or 3 per line,
//       the count fixed by the first data line (or by ncols).
//   Rejected (fallback): signs, any other byte (NUL, '_', '.', bytes >= 0x80, '#' after a
//   token), a token of 19+ digits, a column count other than 2/3 or differing from ncols.
//
//   Returns: src/dst int32 when every value of that column in this chunk is < 2^31, else
//   int64 (each column decided on its own, like numpy's per-chunk narrowing); t int64
//   ([0] for 2 columns); ncols (2/3, or the input ncols when the chunk has no data line,
//   -1 = fall back); lines = number of '\n' in buf; first_data_line = 0-based line index
//   of the first data line in buf (-1 if none).
//
// gnnsparse::parse_edge_chunk_into(Tensor buf, int ncols, Tensor(a!) src, Tensor(b!) dst,
//                                  Tensor(c!) t, int offset)
//     -> (int ncols, int rows, int lines, int first_data_line)
//
//   The same parser, writing the rows at src[offset:], dst[offset:], t[offset:] (so the caller
//   can fill one growing array per column instead of concatenating per-chunk pieces). src/dst:
//   both int32 or both int64; t: int64 (may be empty when ncols == 2). ncols < 0 reports
//   that nothing was written: -1 fall back (as above), -2 an id >= 2^31 does not fit int32
//   src/dst (widen them and call again), -3 out of room: rows = the capacity needed (number of
//   '\n' + 1 rows from offset, for t too unless ncols == 2; grow and call again).
//
// gnnsparse::compact_edge_ids_(Tensor(a!) src, Tensor(b!) dst, int max_id) -> Tensor node_ids
//
//   src/dst: int32, 1-D, contiguous, CPU, values in 0..max_id (max_id < 2^31). Rewritten in
//   place: each id becomes its position among the sorted distinct ids of src and dst, which
//   are returned (int64 node_ids); a presence bitmap with a running count per 64-bit word
//   (rank = count + popcount) does it in O(E + max_id) with 9 bits per id value (cache
//   resident). An id outside 0..max_id fails (TORCH_CHECK) before anything is rewritten.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace gnnsparse {
namespace io {
namespace {

// 1: whitespace other than '\n' (bytes.split's set), 2: digit, 3: '\n', 4: '#', 0: other.
struct ByteClass {
  uint8_t c[256];
  constexpr ByteClass() : c() {
    c[' '] = c['\t'] = c['\v'] = c['\f'] = c['\r'] = 1;
    for (int d = '0'; d <= '9'; ++d) c[d] = 2;
    c['\n'] = 3;
    c['#'] = 4;
  }
};
constexpr ByteClass kClass{};

void check_buf(const char* op, const at::Tensor& buf) {
  TORCH_CHECK(buf.device().is_cpu(), op, ": buf must be a CPU tensor, got a tensor on ", buf.device());
  TORCH_CHECK(buf.scalar_type() == at::kByte, op, ": buf must be a uint8 tensor, got ", buf.scalar_type());
  TORCH_CHECK(buf.dim() == 1, op, ": buf must be 1-D, got ", buf.dim(), "-D");
  TORCH_CHECK(buf.is_contiguous(), op, ": buf must be contiguous");
}

using Result = std::tuple<at::Tensor, at::Tensor, at::Tensor, int64_t, int64_t, int64_t>;

constexpr uint64_t kOnes = 0x0101010101010101ULL;

inline uint64_t load8(const uint8_t* p) {
  uint64_t x;
  std::memcpy(&x, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  x = __builtin_bswap64(x);
#endif
  return x;
}

// Number of leading digit bytes (0..8) of the 8 bytes in x (first byte lowest). A byte b is
// a digit iff its high nibble is 3 and that of b + 6 is too; a carry out of a byte >= 0xFA
// can only disturb the bytes after it, which do not matter once it ends the run.
inline int digit_run(uint64_t x) {
  const uint64_t hi = x & (0xF0 * kOnes);
  const uint64_t hi6 = (x + 0x06 * kOnes) & (0xF0 * kOnes);
  const uint64_t m = (hi ^ (0x30 * kOnes)) | (hi6 ^ (0x30 * kOnes));  // zero byte <=> digit
  const uint64_t nz = (((m & (0x7F * kOnes)) + 0x7F * kOnes) | m) & (0x80 * kOnes);
  return nz ? __builtin_ctzll(nz) >> 3 : 8;
}

// Value of the first len (1..8) digit bytes of x.
inline uint64_t digits_value(uint64_t x, int len) {
  x = (x & (0x0F * kOnes)) << (8 * (8 - len));  // right-align: leading bytes become zeros
  x = (x * 10 + (x >> 8)) & 0x00FF00FF00FF00FFULL;
  x = (x * 100 + (x >> 16)) & 0x0000FFFF0000FFFFULL;
  x = (x * 10000 + (x >> 32)) & 0x00000000FFFFFFFFULL;
  return x;
}

constexpr uint64_t kPow10[9] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000};

// Token of 1..18 digits at p (p[0] is a digit; 24 bytes readable): value and length, false
// for 19+ digits.
inline bool swar_token(const uint8_t* p, uint64_t& v, int& len) {
  uint64_t x = load8(p);
  int n = digit_run(x);
  v = digits_value(x, n);
  len = n;
  if (n < 8) return true;
  x = load8(p + 8);
  n = digit_run(x);
  if (n) v = v * kPow10[n] + digits_value(x, n);
  len += n;
  if (n < 8) return true;
  x = load8(p + 16);
  n = digit_run(x);
  if (n > 2) return false;  // 19+ digits
  if (n) v = v * kPow10[n] + digits_value(x, n);
  len += n;
  return true;
}

Result fallback() {
  at::Tensor e = at::empty({0}, at::TensorOptions().dtype(at::kLong));
  return {e, e, e, -1, 0, -1};
}

// Copies n int64 values to an int32 tensor if they all fit, else returns them as int64.
at::Tensor narrow_ids(const int64_t* v, int64_t n, uint64_t max_value) {
  if (max_value < (uint64_t{1} << 31)) {
    at::Tensor out = at::empty({n}, at::TensorOptions().dtype(at::kInt));
    int32_t* o = out.data_ptr<int32_t>();
    for (int64_t i = 0; i < n; ++i) o[i] = static_cast<int32_t>(v[i]);
    return out;
  }
  at::Tensor out = at::empty({n}, at::TensorOptions().dtype(at::kLong));
  if (n) std::memcpy(out.data_ptr<int64_t>(), v, sizeof(int64_t) * n);
  return out;
}

// Number of '\n' bytes (SSE2: 16 bytes a step, byte counters summed every 255 steps).
int64_t count_newlines(const uint8_t* p, int64_t n) {
  int64_t total = 0, i = 0;
#if defined(__SSE2__)
  const __m128i nl = _mm_set1_epi8('\n');
  while (n - i >= 16) {
    const int64_t steps = std::min<int64_t>((n - i) / 16, 255);
    __m128i acc = _mm_setzero_si128();
    for (int64_t s = 0; s < steps; ++s, i += 16) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
      acc = _mm_sub_epi8(acc, _mm_cmpeq_epi8(v, nl));  // a match is -1
    }
    const __m128i sums = _mm_sad_epu8(acc, _mm_setzero_si128());
    total += _mm_cvtsi128_si64(sums) + _mm_cvtsi128_si64(_mm_unpackhi_epi64(sums, sums));
  }
#endif
  for (; i < n; ++i) total += p[i] == '\n';
  return total;
}

// Result of parse_text; k = -1: fall back (nothing else is meaningful then).
struct Parsed {
  int64_t k = -1, rows = 0, first = -1;
  uint64_t max_src = 0, max_dst = 0;
};

// The parser proper (see the top of the file): rows go to s_out/d_out (int64) and, for 3
// columns, t_out, each with room for (number of '\n' + 1) values; t_out may be null when
// ncols == 2.
Parsed parse_text(const uint8_t* const begin, const uint8_t* const end, int64_t ncols, int64_t* s_out,
                  int64_t* d_out, int64_t* t_out) {
  Parsed r;
  int64_t& k = r.k;
  int64_t& rows = r.rows;
  int64_t& first_data_line = r.first;
  uint64_t& max_src = r.max_src;
  uint64_t& max_dst = r.max_dst;
  k = ncols;
  int64_t line = 0;
  const uint8_t* p = begin;
  while (p < end) {
    // start of a line: skip blanks
    uint8_t cls;
    while ((cls = kClass.c[*p]) == 1) {
      if (++p == end) return r;
    }
    if (cls == 3) {  // end of a blank, comment or data line
      ++line;
      ++p;
      continue;
    }
    if (cls == 4) {  // comment line: skip to '\n' (a NUL anywhere is for the validating parser)
      const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
      const uint8_t* stop = nl ? nl : end;
      if (std::memchr(p, 0, static_cast<size_t>(stop - p))) return Parsed{};
      p = stop;
      continue;
    }
    // data line
    {
      uint64_t row[3];
      int64_t ntok = 0;
      for (;;) {
        if (cls != 2 || ntok == 3) return Parsed{};
        uint64_t v;
        if (end - p >= 24) {  // room for three 8-byte loads: branch-free digit runs
          int len;
          if (!swar_token(p, v, len)) return Parsed{};
          p += len;
        } else {
          v = static_cast<uint64_t>(*p - '0');
          const uint8_t* const tok = p;
          ++p;
          while (p < end) {
            const unsigned d = static_cast<unsigned>(*p) - '0';
            if (d > 9) break;
            v = v * 10 + d;
            ++p;
          }
          if (p - tok > 18) return Parsed{};
        }
        row[ntok++] = v;
        // after a token: blanks, then '\n' / end of buffer, or the next token
        while (p < end && (cls = kClass.c[*p]) == 1) ++p;
        if (p == end || cls == 3) break;
      }
      if (k == 0) {
        if (ntok != 2 && ntok != 3) return Parsed{};
        k = ntok;
        if (k == 3 && t_out == nullptr) return Parsed{};  // the caller said 2 columns
      } else if (ntok != k) {
        return Parsed{};
      }
      if (first_data_line < 0) first_data_line = line;
      s_out[rows] = static_cast<int64_t>(row[0]);
      d_out[rows] = static_cast<int64_t>(row[1]);
      if (k == 3) t_out[rows] = static_cast<int64_t>(row[2]);
      max_src = std::max(max_src, row[0]);
      max_dst = std::max(max_dst, row[1]);
      ++rows;
    }
  }
  return r;
}

thread_local std::vector<int64_t> tls_scratch;  // per-thread id scratch, reused across chunks

int64_t* scratch_ids(int64_t max_rows) {
  if (static_cast<int64_t>(tls_scratch.size()) < 2 * max_rows) tls_scratch.resize(2 * max_rows);
  return tls_scratch.data();
}

Result parse_edge_chunk(const at::Tensor& buf, int64_t ncols) {
  constexpr const char* op = "gnnsparse::parse_edge_chunk";
  check_buf(op, buf);
  TORCH_CHECK(ncols == 0 || ncols == 2 || ncols == 3, op, ": ncols must be 0, 2 or 3, got ", ncols);
  const int64_t n = buf.numel();
  const uint8_t* const begin = n ? buf.data_ptr<uint8_t>() : nullptr;
  const int64_t newlines = count_newlines(begin, n);
  const int64_t max_rows = newlines + 1;  // upper bound on the number of data lines
  int64_t* const s_out = scratch_ids(max_rows);
  int64_t* const d_out = s_out + max_rows;
  at::Tensor t = at::empty({ncols == 2 ? 0 : max_rows}, at::TensorOptions().dtype(at::kLong));
  const Parsed r = parse_text(begin, begin + n, ncols, s_out, d_out, ncols == 2 ? nullptr : t.data_ptr<int64_t>());
  if (r.k < 0) return fallback();
  at::Tensor src = narrow_ids(s_out, r.rows, r.max_src);
  at::Tensor dst = narrow_ids(d_out, r.rows, r.max_dst);
  t = r.k == 3 ? t.narrow(0, 0, r.rows) : at::empty({0}, at::TensorOptions().dtype(at::kLong));
  return {src, dst, t, r.k, newlines, r.first};
}

template <typename T>
void store_ids(const int64_t* v, int64_t n, T* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(v[i]);
}

std::tuple<int64_t, int64_t, int64_t, int64_t> parse_edge_chunk_into(const at::Tensor& buf, int64_t ncols,
                                                                     at::Tensor src, at::Tensor dst, at::Tensor t,
                                                                     int64_t offset) {
  constexpr const char* op = "gnnsparse::parse_edge_chunk_into";
  check_buf(op, buf);
  TORCH_CHECK(ncols == 0 || ncols == 2 || ncols == 3, op, ": ncols must be 0, 2 or 3, got ", ncols);
  for (const at::Tensor* x : {&src, &dst, &t}) {
    TORCH_CHECK(x->device().is_cpu() && x->dim() == 1 && x->is_contiguous(), op,
                ": src, dst and t must be 1-D contiguous CPU tensors");
  }
  TORCH_CHECK(src.scalar_type() == dst.scalar_type() &&
                  (src.scalar_type() == at::kInt || src.scalar_type() == at::kLong),
              op, ": src and dst must both be int32 or both int64, got ", src.scalar_type(), " and ",
              dst.scalar_type());
  TORCH_CHECK(t.scalar_type() == at::kLong, op, ": t must be int64, got ", t.scalar_type());
  TORCH_CHECK(offset >= 0 && offset <= src.numel() && src.numel() == dst.numel(), op,
              ": bad offset ", offset, " for src/dst of ", src.numel(), "/", dst.numel(), " rows");
  const int64_t n = buf.numel();
  const uint8_t* const begin = n ? buf.data_ptr<uint8_t>() : nullptr;
  const int64_t newlines = count_newlines(begin, n);
  const int64_t max_rows = newlines + 1;
  const bool need_t = ncols != 2;
  if (src.numel() - offset < max_rows || (need_t && t.numel() - offset < max_rows)) {
    return {-3, offset + max_rows, newlines, -1};  // out of room: rows = capacity needed
  }
  int64_t* const s_out = scratch_ids(max_rows);
  int64_t* const d_out = s_out + max_rows;
  const Parsed r =
      parse_text(begin, begin + n, ncols, s_out, d_out, need_t ? t.data_ptr<int64_t>() + offset : nullptr);
  if (r.k < 0) return {-1, 0, newlines, -1};
  if (src.scalar_type() == at::kInt) {
    if (std::max(r.max_src, r.max_dst) >= (uint64_t{1} << 31)) return {-2, 0, newlines, -1};  // needs int64
    store_ids(s_out, r.rows, src.data_ptr<int32_t>() + offset);
    store_ids(d_out, r.rows, dst.data_ptr<int32_t>() + offset);
  } else {
    store_ids(s_out, r.rows, src.data_ptr<int64_t>() + offset);
    store_ids(d_out, r.rows, dst.data_ptr<int64_t>() + offset);
  }
  return {r.k, r.rows, newlines, r.first};
}

// v[i] = rank of v[i] in the bitmap (count of set bits below it).
inline void rank_ids_body(int32_t* v, int64_t n, const uint64_t* bits, const int32_t* rank) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t id = static_cast<uint32_t>(v[i]);
    const uint64_t below = bits[id >> 6] & ((uint64_t{1} << (id & 63)) - 1);
    v[i] = rank[id >> 6] + std::popcount(below);
  }
}

void rank_ids(int32_t* v, int64_t n, const uint64_t* bits, const int32_t* rank) {
  rank_ids_body(v, n, bits, rank);
}

// The build targets baseline x86-64 (no POPCNT instruction): a copy compiled for POPCNT,
// chosen at run time.
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define GNNSPARSE_IO_POPCNT 1
__attribute__((target("popcnt"))) void rank_ids_popcnt(int32_t* v, int64_t n, const uint64_t* bits,
                                                       const int32_t* rank) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t id = static_cast<uint32_t>(v[i]);
    const uint64_t below = bits[id >> 6] & ((uint64_t{1} << (id & 63)) - 1);
    v[i] = rank[id >> 6] + __builtin_popcountll(below);
  }
}
#else
#define GNNSPARSE_IO_POPCNT 0
#endif

at::Tensor compact_edge_ids_(at::Tensor src, at::Tensor dst, int64_t max_id) {
  constexpr const char* op = "gnnsparse::compact_edge_ids_";
  for (const at::Tensor* x : {&src, &dst}) {
    TORCH_CHECK(x->device().is_cpu(), op, ": ids must be CPU tensors, got a tensor on ", x->device());
    TORCH_CHECK(x->scalar_type() == at::kInt, op, ": ids must be int32, got ", x->scalar_type());
    TORCH_CHECK(x->dim() == 1 && x->is_contiguous(), op, ": ids must be 1-D and contiguous");
  }
  TORCH_CHECK(max_id >= 0 && max_id < (int64_t{1} << 31), op, ": max_id must be in 0..2^31-1, got ", max_id);
  // Presence bitmap + a running count per 64-bit word ("rank"): rank(id) = count[id / 64] +
  // popcount(word & bits below id). 9 bits per id value (vs 40 for a byte mask + int32 table),
  // so the random lookups stay in the L2 cache for millions of ids.
  const int64_t size = max_id + 1;
  const int64_t words = (size + 63) / 64;
  std::vector<uint64_t> bits(static_cast<size_t>(words), 0);
  for (const at::Tensor* x : {&src, &dst}) {
    const int32_t* v = x->data_ptr<int32_t>();
    const int64_t n = x->numel();
    uint32_t bad = 0;  // OR of out-of-range flags: one check after the loop
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t id = static_cast<uint32_t>(v[i]);
      const bool out = id > static_cast<uint32_t>(max_id);
      bad |= out;
      const uint32_t j = out ? 0 : id;
      bits[j >> 6] |= uint64_t{1} << (j & 63);
    }
    TORCH_CHECK(!bad, op, ": an id is outside 0..", max_id);
  }
  std::vector<int32_t> rank(static_cast<size_t>(words));
  int64_t count = 0;  // <= 2^31: every rank fits int32 (the caller refuses 2^31 ids)
  for (int64_t w = 0; w < words; ++w) {
    rank[w] = static_cast<int32_t>(count);
    count += std::popcount(bits[w]);
  }
  at::Tensor node_ids = at::empty({count}, at::TensorOptions().dtype(at::kLong));
  {
    int64_t* o = node_ids.data_ptr<int64_t>();
    for (int64_t w = 0; w < words; ++w) {
      for (uint64_t m = bits[w]; m; m &= m - 1) *o++ = w * 64 + std::countr_zero(m);
    }
  }
  for (at::Tensor* x : {&src, &dst}) {
#if GNNSPARSE_IO_POPCNT
    if (__builtin_cpu_supports("popcnt")) {
      rank_ids_popcnt(x->data_ptr<int32_t>(), x->numel(), bits.data(), rank.data());
      continue;
    }
#endif
    rank_ids(x->data_ptr<int32_t>(), x->numel(), bits.data(), rank.data());
  }
  return node_ids;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(gnnsparse, m) {
  m.def(
      "parse_edge_chunk(Tensor buf, int ncols) -> (Tensor src, Tensor dst, Tensor t, int ncols, int lines, "
      "int first_data_line)");
  m.def(
      "parse_edge_chunk_into(Tensor buf, int ncols, Tensor(a!) src, Tensor(b!) dst, Tensor(c!) t, int offset) "
      "-> (int ncols, int rows, int lines, int first_data_line)");
  m.def("compact_edge_ids_(Tensor(a!) src, Tensor(b!) dst, int max_id) -> Tensor node_ids");
}

TORCH_LIBRARY_IMPL(gnnsparse, CompositeExplicitAutograd, m) {
  m.impl("parse_edge_chunk", &parse_edge_chunk);
  m.impl("parse_edge_chunk_into", &parse_edge_chunk_into);
  m.impl("compact_edge_ids_", &compact_edge_ids_);
}

}  // namespace io
}  // namespace gnnsparse
