// Sparse-structure bookkeeping on the GPU: validation of CSR/BSR index tensors (with a cache of
// structures that passed), the CSR transpose (op csr_transpose), the per-tile row order used
// by the CSR forward, and the bias gradient (op bias_grad).
#include "common.cuh"

#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/argsort.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/repeat_interleave.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/library.h>

#include <algorithm>
#include <mutex>
#include <sstream>

namespace gnnsparse {
namespace cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// Cache of validated structures, keyed by the identity (weak reference), data pointer and
// version counter of each index tensor plus the dims. An in-place change bumps the version; a
// freed tensor expires its weak reference; so a hit is always the same, unchanged structure.
using WeakImpl = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;

struct Entry {
  std::string kind;
  std::vector<int64_t> dims;
  std::vector<WeakImpl> refs;
  // Storage identity and geometry too: `t.data = other` swaps a TensorImpl's storage, sizes and
  // strides without bumping its version counter (and the old address may be reused).
  std::vector<c10::weak_intrusive_ptr<c10::StorageImpl>> storages;
  std::vector<std::vector<int64_t>> geoms;
  std::vector<const void*> ptrs;
  std::vector<int64_t> versions;
  at::Tensor derived;  // optional data computed from the structure (row order)
  uint64_t last_use = 0;
};

std::mutex g_mutex;
std::vector<Entry> g_cache;
uint64_t g_clock = 0;
constexpr size_t kMaxEntries = 64;

std::vector<int64_t> geometry(const at::Tensor& t) {
  std::vector<int64_t> g(t.sizes().begin(), t.sizes().end());
  g.insert(g.end(), t.strides().begin(), t.strides().end());
  return g;
}

// Inference tensors have no version counter (`_version()` throws) and may be written in place
// inside inference mode untracked: never cached, validated on every call.
bool cacheable(const std::vector<at::Tensor>& ts) {
  for (const auto& t : ts)
    if (t.is_inference()) return false;
  return true;
}

bool matches(const Entry& e, const std::string& kind, const std::vector<int64_t>& dims,
             const std::vector<at::Tensor>& ts) {
  if (e.kind != kind || e.dims != dims || e.refs.size() != ts.size()) return false;
  for (size_t i = 0; i < ts.size(); ++i) {
    if (e.refs[i].expired() || e.refs[i]._unsafe_get_target() != ts[i].unsafeGetTensorImpl() ||
        e.storages[i].expired() ||
        e.storages[i]._unsafe_get_target() != ts[i].storage().unsafeGetStorageImpl() ||
        e.ptrs[i] != ts[i].const_data_ptr() || e.versions[i] != ts[i]._version() ||
        e.geoms[i] != geometry(ts[i]))
      return false;
  }
  return true;
}

// Returns the cached entry's derived tensor (may be undefined) and true on a hit.
bool lookup(const std::string& kind, const std::vector<int64_t>& dims, const std::vector<at::Tensor>& ts,
            at::Tensor* derived) {
  if (!cacheable(ts)) return false;
  std::lock_guard<std::mutex> lock(g_mutex);
  for (auto& e : g_cache) {
    if (matches(e, kind, dims, ts)) {
      e.last_use = ++g_clock;
      if (derived) *derived = e.derived;
      return true;
    }
  }
  return false;
}

void remember(const std::string& kind, const std::vector<int64_t>& dims, const std::vector<at::Tensor>& ts,
              const at::Tensor& derived) {
  if (!cacheable(ts)) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  // drop entries whose tensors are gone, then the least recently used if still full
  g_cache.erase(std::remove_if(g_cache.begin(), g_cache.end(),
                               [](const Entry& e) {
                                 for (const auto& r : e.refs)
                                   if (r.expired()) return true;
                                 for (const auto& r : e.storages)
                                   if (r.expired()) return true;
                                 return false;
                               }),
                g_cache.end());
  if (g_cache.size() >= kMaxEntries) {
    auto lru = std::min_element(g_cache.begin(), g_cache.end(),
                                [](const Entry& a, const Entry& b) { return a.last_use < b.last_use; });
    g_cache.erase(lru);
  }
  Entry e;
  e.kind = kind;
  e.dims = dims;
  for (const auto& t : ts) {
    e.refs.emplace_back(t.getIntrusivePtr());
    e.storages.push_back(t.storage().getWeakStorageImpl());
    e.geoms.push_back(geometry(t));
    e.ptrs.push_back(t.const_data_ptr());
    e.versions.push_back(t._version());
  }
  e.derived = derived;
  e.last_use = ++g_clock;
  g_cache.push_back(std::move(e));
}

// ---------------------------------------------------------------------------------------------
// Device checks. Bits of the flag word:
enum : int {
  kCrowDecreasing = 1,
  kCrowFirst = 2,
  kCrowLast = 4,
  kColRange = 8,
  kColUnsorted = 16,
};

__global__ void check_compressed_kernel(const int64_t* __restrict__ crow, const int64_t* __restrict__ col,
                                        int64_t rows, int64_t cols, int64_t nnz, bool check_sorted,
                                        int* __restrict__ flag) {
  // at least 1, so that i == 0 (crow[0] == 0, crow[rows] == nnz) is also checked when rows == nnz == 0
  const int64_t n = max(max(rows, nnz), (int64_t)1);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    if (i == 0) {
      if (crow[0] != 0) atomicOr(flag, kCrowFirst);
      if (crow[rows] != nnz) atomicOr(flag, kCrowLast);
    }
    if (i < rows) {
      const int64_t a = crow[i], b = crow[i + 1];
      if (b < a) atomicOr(flag, kCrowDecreasing);
      if (check_sorted && a >= 0 && a <= b && b <= nnz) {
        for (int64_t p = a + 1; p < b; ++p) {
          if (col[p] < col[p - 1]) {
            atomicOr(flag, kColUnsorted);
            break;
          }
        }
      }
    }
    if (i < nnz) {
      const int64_t c = col[i];
      if (c < 0 || c >= cols) atomicOr(flag, kColRange);
    }
  }
}

int run_flag_kernel_compressed(const at::Tensor& crow, const at::Tensor& col, int64_t rows, int64_t cols,
                               bool check_sorted) {
  const int64_t nnz = col.size(0);
  auto flag = at::zeros({1}, crow.options().dtype(at::kInt));
  const int64_t work = std::max<int64_t>(std::max(rows, nnz), 1);
  const int threads = 256;
  const int blocks = (int)std::min<int64_t>(ceil_div(work, threads), 4096);
  check_compressed_kernel<<<blocks, threads, 0, stream()>>>(crow.const_data_ptr<int64_t>(),
                                                          col.const_data_ptr<int64_t>(), rows, cols, nnz,
                                                          check_sorted, flag.mutable_data_ptr<int>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return flag.item<int>();
}

// On failure only: copy the indices to the host and name the first bad position.
std::string describe_compressed_error(const char* op, const at::Tensor& crow_d, const at::Tensor& col_d,
                                      int64_t rows, int64_t cols, bool check_sorted, const char* what) {
  auto crow = crow_d.cpu();
  auto col = col_d.cpu();
  const int64_t* cr = crow.const_data_ptr<int64_t>();
  const int64_t* ci = col.const_data_ptr<int64_t>();
  const int64_t nnz = col.size(0);
  std::ostringstream s;
  s << op << ": invalid " << what << ": ";
  if (cr[0] != 0) {
    s << "crow_indices[0] must be 0, got " << cr[0];
    return s.str();
  }
  for (int64_t i = 0; i < rows; ++i) {
    if (cr[i + 1] < cr[i]) {
      s << "crow_indices must be non-decreasing, but crow_indices[" << i + 1 << "] = " << cr[i + 1]
        << " < crow_indices[" << i << "] = " << cr[i];
      return s.str();
    }
  }
  if (cr[rows] != nnz) {
    s << "crow_indices[-1] must equal nnz = " << nnz << ", got " << cr[rows];
    return s.str();
  }
  for (int64_t p = 0; p < nnz; ++p) {
    if (ci[p] < 0 || ci[p] >= cols) {
      s << "col_indices[" << p << "] = " << ci[p] << " is out of range [0, " << cols << ")";
      return s.str();
    }
  }
  if (check_sorted) {
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t p = cr[i] + 1; p < cr[i + 1]; ++p) {
        if (ci[p] < ci[p - 1]) {
          s << "col_indices must be sorted within each row on the CUDA backend, but row " << i
            << " has col_indices[" << p - 1 << "] = " << ci[p - 1] << " > col_indices[" << p
            << "] = " << ci[p];
          return s.str();
        }
      }
    }
  }
  s << "(device check failed, host check found nothing: was the structure modified concurrently?)";
  return s.str();
}

void validate_compressed(const char* op, const at::Tensor& crow, const at::Tensor& col, int64_t rows,
                         int64_t cols, bool sorted, const char* kind, const char* what) {
  TORCH_CHECK(rows >= 0 && cols >= 0, op, ": negative matrix shape (", rows, ", ", cols, ")");
  TORCH_CHECK(crow.size(0) == rows + 1, op, ": crow_indices must have length ", rows, " + 1 = ", rows + 1,
              ", got ", crow.size(0));
  TORCH_CHECK(col.size(0) < INT32_MAX && cols < INT32_MAX - 256, op,
              ": the CUDA kernels support fewer than 2^31 stored entries and columns, got nnz = ",
              col.size(0), ", columns = ", cols);
  auto c = crow.contiguous();
  auto ci = col.contiguous();
  const std::vector<int64_t> dims{rows, cols};
  if (lookup(kind, dims, {crow, col}, nullptr)) return;
  c10::cuda::CUDAGuard guard(crow.device());
  if (run_flag_kernel_compressed(c, ci, rows, cols, sorted) != 0)
    TORCH_CHECK(false, describe_compressed_error(op, c, ci, rows, cols, sorted, what));
  remember(kind, dims, {crow, col}, at::Tensor());
}

__global__ void check_transpose_kernel(const int64_t* __restrict__ crow, const int64_t* __restrict__ col,
                                       const int64_t* __restrict__ t_crow, const int64_t* __restrict__ t_col,
                                       const int64_t* __restrict__ t_perm, int64_t rows, int64_t cols,
                                       int64_t nnz, int* __restrict__ seen, int* __restrict__ flag) {
  for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < cols; c += (int64_t)gridDim.x * blockDim.x) {
    const int64_t a = t_crow[c], b = t_crow[c + 1];
    if (c == 0 && a != 0) atomicOr(flag, 1);
    if (c == cols - 1 && b != nnz) atomicOr(flag, 1);
    if (a < 0 || b < a || b > nnz) {
      atomicOr(flag, 1);
      continue;
    }
    int64_t prev_row = -1;
    for (int64_t q = a; q < b; ++q) {
      const int64_t p = t_perm[q], r = t_col[q];
      if (p < 0 || p >= nnz || r < 0 || r >= rows || r < prev_row) {
        atomicOr(flag, 2);
        continue;
      }
      prev_row = r;
      if (col[p] != c || p < crow[r] || p >= crow[r + 1]) atomicOr(flag, 2);
      atomicAdd(seen + p, 1);
    }
  }
}

__global__ void check_seen_once_kernel(const int* __restrict__ seen, int64_t nnz, int* __restrict__ flag) {
  for (int64_t p = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; p < nnz; p += (int64_t)gridDim.x * blockDim.x)
    if (seen[p] != 1) atomicOr(flag, 4);
}

// ---------------------------------------------------------------------------------------------
// Ops
at::Tensor bias_grad_cuda(const at::Tensor& grad_out) {
  TORCH_CHECK(grad_out.is_cuda(), "bias_grad: grad_out must be a CUDA tensor, got ", grad_out.device());
  TORCH_CHECK(grad_out.dim() == 2, "bias_grad: expected 2-D grad_out, got shape ", grad_out.sizes());
  check_floating("bias_grad", grad_out);
  c10::cuda::CUDAGuard guard(grad_out.device());
  // ATen's reduction accumulates half/bfloat16 in float32 and is deterministic.
  return at::sum(grad_out, {0});
}

}  // namespace

// Structure of Wᵀ (op csr_transpose): a stable sort of the entries by (column, row).
std::tuple<at::Tensor, at::Tensor, at::Tensor> csr_transpose_impl(const at::Tensor& crow, const at::Tensor& col,
                                                                  int64_t in_features) {
  const char* op = "csr_transpose";
  check_index(op, "crow_indices", crow, crow);
  check_index(op, "col_indices", col, crow);
  TORCH_CHECK(crow.size(0) >= 1, op, ": expected crow_indices of shape [out_features + 1], got ", crow.sizes());
  validate_csr(op, crow, col, crow.size(0) - 1, in_features);
  return transpose_structure(crow, col, in_features);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> transpose_structure(const at::Tensor& crow, const at::Tensor& col,
                                                                   int64_t cols) {
  const int64_t rows = crow.size(0) - 1, nnz = col.size(0);
  const int64_t in_features = cols;
  c10::cuda::CUDAGuard guard(crow.device());
  auto c = crow.contiguous();
  auto ci = col.contiguous();
  auto counts = c.slice(0, 1) - c.slice(0, 0, rows);
  auto row = at::repeat_interleave(counts, nnz);  // row index of every entry, [nnz]
  // stable sort by (column, row): entries of a W^T row in increasing W row
  auto key = ci * std::max<int64_t>(rows, 1) + row;
  auto perm = std::get<1>(at::sort(key, /*stable=*/true, /*dim=*/0, /*descending=*/false));
  auto t_col = row.index_select(0, perm);
  auto sorted_col = ci.index_select(0, perm);
  auto t_crow = at::searchsorted(sorted_col, at::arange(in_features + 1, c.options()));
  return {t_crow, t_col, perm};
}

void validate_csr(const char* op, const at::Tensor& crow, const at::Tensor& col, int64_t rows, int64_t cols) {
  validate_compressed(op, crow, col, rows, cols, /*sorted=*/true, "csr", "CSR weight");
}

void validate_bsr(const char* op, const at::Tensor& crow, const at::Tensor& col, int64_t rows, int64_t cols) {
  validate_compressed(op, crow, col, rows, cols, /*sorted=*/false, "bsr", "BSR block structure");
}

void validate_csr_transpose(const char* op, const at::Tensor& crow, const at::Tensor& col,
                            const at::Tensor& t_crow, const at::Tensor& t_col, const at::Tensor& t_perm,
                            int64_t rows, int64_t cols) {
  const int64_t nnz = col.size(0);
  check_index(op, "t_crow", t_crow, crow);
  check_index(op, "t_col", t_col, crow);
  check_index(op, "t_perm", t_perm, crow);
  TORCH_CHECK(t_crow.size(0) == cols + 1 && t_col.size(0) == nnz && t_perm.size(0) == nnz, op,
              ": the transpose of W [", rows, ", ", cols, "] with ", nnz,
              " entries must have t_crow [", cols + 1, "], t_col and t_perm [", nnz, "], got ", t_crow.sizes(),
              ", ", t_col.sizes(), ", ", t_perm.sizes());
  const std::vector<int64_t> dims{rows, cols};
  const std::vector<at::Tensor> ts{crow, col, t_crow, t_col, t_perm};
  if (lookup("csr_t", dims, ts, nullptr)) return;
  c10::cuda::CUDAGuard guard(crow.device());
  auto flag = at::zeros({1}, crow.options().dtype(at::kInt));
  auto seen = at::zeros({std::max<int64_t>(nnz, 1)}, crow.options().dtype(at::kInt));
  int bad = 0;
  if (cols > 0) {
    const int blocks = (int)std::min<int64_t>(ceil_div(cols, 256), 4096);
    check_transpose_kernel<<<blocks, 256, 0, stream()>>>(
        crow.contiguous().const_data_ptr<int64_t>(), col.contiguous().const_data_ptr<int64_t>(),
        t_crow.contiguous().const_data_ptr<int64_t>(), t_col.contiguous().const_data_ptr<int64_t>(),
        t_perm.contiguous().const_data_ptr<int64_t>(), rows, cols, nnz, seen.mutable_data_ptr<int>(),
        flag.mutable_data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (nnz > 0) {
      const int b2 = (int)std::min<int64_t>(ceil_div(nnz, 256), 4096);
      check_seen_once_kernel<<<b2, 256, 0, stream()>>>(seen.const_data_ptr<int>(), nnz, flag.mutable_data_ptr<int>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    bad = flag.item<int>();
  } else {
    bad = nnz != 0 || t_crow.cpu().const_data_ptr<int64_t>()[0] != 0;
  }
  TORCH_CHECK(bad == 0, op,
              ": (t_crow, t_col, t_perm) is not the transpose of W (stale cached transpose? recompute it "
              "with csr_transpose after changing the structure)");
  remember("csr_t", dims, ts, at::Tensor());
}

at::Tensor row_order(const at::Tensor& crow, int64_t rows, int64_t rows_per_tile) {
  const std::vector<int64_t> dims{rows, rows_per_tile};
  at::Tensor cached;
  if (lookup("row_order", dims, {crow}, &cached)) return cached;
  c10::cuda::CUDAGuard guard(crow.device());
  auto c = crow.contiguous();
  const int64_t nnz_bound = rows > 0 ? c.select(0, rows).item<int64_t>() + 1 : 1;
  auto counts = c.slice(0, 1) - c.slice(0, 0, rows);
  auto tile = at::arange(rows, c.options()).div(rows_per_tile, "floor");
  auto key = tile * nnz_bound + (nnz_bound - counts);  // tile ascending, nnz descending
  auto order = at::argsort(key, /*stable=*/true, /*dim=*/0, /*descending=*/false).to(at::kInt);
  remember("row_order", dims, {crow}, order);
  return order;
}

}  // namespace cuda
}  // namespace gnnsparse

TORCH_LIBRARY_IMPL(gnnsparse, CUDA, m) {
  m.impl("csr_transpose", &gnnsparse::cuda::csr_transpose_impl);
  m.impl("bias_grad", &gnnsparse::cuda::bias_grad_cuda);
}
