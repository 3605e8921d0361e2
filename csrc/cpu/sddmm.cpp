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
#include "csr_tiles.h"

#include <ATen/ops/empty.h>
#include <torch/library.h>

namespace gnnsparse {
namespace cpu {
namespace {


template <typename T, bool kAvx2>
void sddmm_driver(const T* G, const T* X, int64_t N, int64_t rows, int64_t cols,
                  const int64_t* crow, const int64_t* col, int64_t nnz, T* out) {
  const int64_t chunk = reduction_chunk_nodes(N, nnz * static_cast<int64_t>(sizeof(T)));
  const int64_t nchunks = ceil_div(N, chunk);
  // Partial sums [nchunks, nnz]; with a single chunk write straight into `out`.
  AlignedBuffer<T> partial_buf(nchunks > 1 ? nchunks * nnz : 1);
  T* partial = nchunks > 1 ? partial_buf.get() : out;
  const int nt = num_threads_for(nchunks);
  const bool use512 = kAvx2 && avx512_enabled();
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
          if (use512) {
            sddmm_tile_avx512<T>(gt, xt, crow, col, rows, part);
          } else {
            sddmm_tile_avx2<T>(gt, xt, crow, col, rows, part);
          }
#endif
        } else {
          load_tile_t_generic<T>(G + n0 * rows, rows, nr, rows, gt);
          load_tile_t_generic<T>(X + n0 * cols, cols, nr, cols, xt);
          sddmm_tile_generic<T>(gt, xt, crow, col, rows, part);
        }
      }
    }
  }
  if (nchunks > 1) reduce_chunks<T>(partial, nchunks, nnz, 0, nnz, out);
}

at::Tensor csr_sddmm_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                         const at::Tensor& crow_indices, const at::Tensor& col_indices) {
  constexpr const char* op = "gnnsparse::csr_sddmm";
  check_grad_and_input(op, grad_out, x);
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
