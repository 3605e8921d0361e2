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
// gnnsparse::compact_edge_ids_(Tensor(a!) src, Tensor(b!) dst, int max_id) -> Tensor node_ids
//
//   src/dst: int32, 1-D, contiguous, CPU, values in 0..max_id (max_id < 2^31). Rewritten in
//   place: each id becomes its position among the sorted distinct ids of src and dst, which
//   are returned (int64 node_ids); a presence mask (max_id + 1 bytes) and a prefix-count
//   lookup table (max_id + 1 int32) do it in O(E + max_id). An id outside 0..max_id fails
//   (TORCH_CHECK) before anything is rewritten.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

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

Result parse_edge_chunk(const at::Tensor& buf, int64_t ncols) {
  constexpr const char* op = "gnnsparse::parse_edge_chunk";
  check_buf(op, buf);
  TORCH_CHECK(ncols == 0 || ncols == 2 || ncols == 3, op, ": ncols must be 0, 2 or 3, got ", ncols);
  const int64_t n = buf.numel();
  const uint8_t* const begin = n ? buf.data_ptr<uint8_t>() : nullptr;
  const uint8_t* const end = begin + n;

  // Upper bound on the number of data lines: newlines + 1.
  int64_t max_rows = 1;
  {
    const uint8_t* q = begin;
    while (q < end) {
      const void* hit = std::memchr(q, '\n', static_cast<size_t>(end - q));
      if (!hit) break;
      ++max_rows;
      q = static_cast<const uint8_t*>(hit) + 1;
    }
  }
  // src/dst are parsed into int64 scratch (narrowed at the end), t straight into its tensor.
  thread_local std::vector<int64_t> scratch;
  if (static_cast<int64_t>(scratch.size()) < 2 * max_rows) scratch.resize(2 * max_rows);
  int64_t* const s_out = scratch.data();
  int64_t* const d_out = s_out + max_rows;
  at::Tensor t = at::empty({ncols == 2 ? 0 : max_rows}, at::TensorOptions().dtype(at::kLong));
  int64_t* t_out = t.data_ptr<int64_t>();

  int64_t k = ncols;
  int64_t rows = 0, line = 0, first_data_line = -1;
  uint64_t max_src = 0, max_dst = 0;
  const uint8_t* p = begin;
  while (p < end) {
    // start of a line: skip blanks
    uint8_t cls;
    while ((cls = kClass.c[*p]) == 1) {
      if (++p == end) goto done;
    }
    if (cls == 3) {  // end of a blank, comment or data line
      ++line;
      ++p;
      continue;
    }
    if (cls == 4) {  // comment line: skip to '\n' (a NUL anywhere is for the validating parser)
      const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
      const uint8_t* stop = nl ? nl : end;
      if (std::memchr(p, 0, static_cast<size_t>(stop - p))) return fallback();
      p = stop;
      continue;
    }
    // data line
    {
      uint64_t row[3];
      int64_t ntok = 0;
      for (;;) {
        if (cls != 2 || ntok == 3) return fallback();
        uint64_t v = static_cast<uint64_t>(*p - '0');
        const uint8_t* const tok = p;
        ++p;
        while (p < end) {
          const unsigned d = static_cast<unsigned>(*p) - '0';
          if (d > 9) break;
          v = v * 10 + d;
          ++p;
        }
        if (p - tok > 18) return fallback();
        row[ntok++] = v;
        // after a token: blanks, then '\n' / end of buffer, or the next token
        while (p < end && (cls = kClass.c[*p]) == 1) ++p;
        if (p == end || cls == 3) break;
      }
      if (k == 0) {
        if (ntok != 2 && ntok != 3) return fallback();
        k = ntok;
        if (k == 3 && t.numel() == 0) {
          t = at::empty({max_rows}, at::TensorOptions().dtype(at::kLong));
          t_out = t.data_ptr<int64_t>();
        }
      } else if (ntok != k) {
        return fallback();
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
done:
  at::Tensor src = narrow_ids(s_out, rows, max_src);
  at::Tensor dst = narrow_ids(d_out, rows, max_dst);
  t = k == 3 ? t.narrow(0, 0, rows) : at::empty({0}, at::TensorOptions().dtype(at::kLong));
  return {src, dst, t, k, max_rows - 1, first_data_line};
}

at::Tensor compact_edge_ids_(at::Tensor src, at::Tensor dst, int64_t max_id) {
  constexpr const char* op = "gnnsparse::compact_edge_ids_";
  for (const at::Tensor* x : {&src, &dst}) {
    TORCH_CHECK(x->device().is_cpu(), op, ": ids must be CPU tensors, got a tensor on ", x->device());
    TORCH_CHECK(x->scalar_type() == at::kInt, op, ": ids must be int32, got ", x->scalar_type());
    TORCH_CHECK(x->dim() == 1 && x->is_contiguous(), op, ": ids must be 1-D and contiguous");
  }
  TORCH_CHECK(max_id >= 0 && max_id < (int64_t{1} << 31), op, ": max_id must be in 0..2^31-1, got ", max_id);
  const int64_t size = max_id + 1;
  std::vector<uint8_t> present(static_cast<size_t>(size), 0);
  for (const at::Tensor* x : {&src, &dst}) {
    const int32_t* v = x->data_ptr<int32_t>();
    const int64_t n = x->numel();
    uint32_t bad = 0;  // OR of out-of-range flags: one check after the loop
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t id = static_cast<uint32_t>(v[i]);
      const bool out = id > static_cast<uint32_t>(max_id);
      bad |= out;
      present[out ? 0 : id] = 1;
    }
    TORCH_CHECK(!bad, op, ": an id is outside 0..", max_id);
  }
  std::vector<int32_t> lut(static_cast<size_t>(size));
  int64_t count = 0;  // <= 2^31: every lut entry fits int32 (the caller refuses 2^31 ids)
  for (int64_t i = 0; i < size; ++i) {
    lut[i] = static_cast<int32_t>(count);
    count += present[i];
  }
  at::Tensor node_ids = at::empty({count}, at::TensorOptions().dtype(at::kLong));
  {
    int64_t* o = node_ids.data_ptr<int64_t>();
    for (int64_t i = 0; i < size; ++i)
      if (present[i]) *o++ = i;
  }
  for (at::Tensor* x : {&src, &dst}) {
    int32_t* v = x->data_ptr<int32_t>();
    const int64_t n = x->numel();
    for (int64_t i = 0; i < n; ++i) v[i] = lut[v[i]];
  }
  return node_ids;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(gnnsparse, m) {
  m.def(
      "parse_edge_chunk(Tensor buf, int ncols) -> (Tensor src, Tensor dst, Tensor t, int ncols, int lines, "
      "int first_data_line)");
  m.def("compact_edge_ids_(Tensor(a!) src, Tensor(b!) dst, int max_id) -> Tensor node_ids");
}

TORCH_LIBRARY_IMPL(gnnsparse, CompositeExplicitAutograd, m) {
  m.impl("parse_edge_chunk", &parse_edge_chunk);
  m.impl("compact_edge_ids_", &compact_edge_ids_);
}

}  // namespace io
}  // namespace gnnsparse
