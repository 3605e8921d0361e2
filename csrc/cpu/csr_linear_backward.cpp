// CPU op: csr_linear_backward, the whole backward of csr_linear in one pass over the nodes:
//   dX [N, in]   = dY W            (need_x; the forward kernel over the cached W^T)
//   dvalues [nnz] = (dY^T X) at the stored positions of W   (need_values; SDDMM)
//   dbias [out]  = column sums of dY                         (need_bias)
// Each node tile's dY rows are transposed once (Gt[out][32]) and used by all three, and
// each X tile once (Xt[in][32]); the separate ops would read dY three times. dX tiles are
// written with streaming stores when the output is large (see kStreamBytes).
//
// Determinism: nodes are split into chunks whose size depends on N only (as in csr_sddmm);
// chunks go to threads with schedule(static); the dvalues and dbias partial sums of each
// chunk are reduced in chunk order. Every dX element is computed by one thread in a fixed
// order. Results are bit-identical for any thread count.
#include "common.h"
#include "csr_tiles.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

namespace gnnsparse {
namespace cpu {
namespace {

template <typename T>
inline void bias_tile_add(const T* __restrict Gt, int64_t rows, T* __restrict part) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* g = Gt + r * kTile;
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int64_t j = 0; j < kTile; j += 4) {
      s0 += g[j];
      s1 += g[j + 1];
      s2 += g[j + 2];
      s3 += g[j + 3];
    }
    part[r] += (s0 + s1) + (s2 + s3);
  }
}

template <typename T, bool kAvx2>
void backward_driver(const T* G, const T* X, int64_t N, int64_t rows, int64_t cols,
                     const int64_t* crow, const int64_t* col, int64_t nnz,
                     const int64_t* t_crow, const int64_t* t_col, const T* values,
                     const int64_t* t_perm, T* dX, T* dV, T* dB) {
  const bool need_x = dX != nullptr, need_v = dV != nullptr, need_b = dB != nullptr;
  // partial sums per chunk: [nnz] dvalues then [rows] dbias
  const int64_t part_elems = (need_v ? nnz : 0) + (need_b ? rows : 0);
  const int64_t chunk = reduction_chunk_nodes(N, std::max<int64_t>(part_elems, 1) * sizeof(T));
  const int64_t nchunks = ceil_div(N, chunk);
  AlignedBuffer<T> partial(std::max<int64_t>(nchunks * part_elems, 1));
  const int nt = num_threads_for(nchunks);
  constexpr int64_t kRowChunk = 32;  // dX rows computed and written per chunk (as in csr_linear)
  const int64_t gt_elems = tile_buffer_elems(rows + 1);  // + the zero row for padding entries
  const int64_t xt_elems = tile_buffer_elems(cols);
  const int64_t dxt_elems = tile_buffer_elems(std::min(cols, kRowChunk));
  const int64_t per_thread = gt_elems + xt_elems + dxt_elems;
  AlignedBuffer<T> scratch(per_thread * nt);
  const bool use512 = kAvx2 && avx512_enabled();
  const bool stream = N * cols * static_cast<int64_t>(sizeof(T)) >= kStreamBytes;
  // W^T (rows: input features) with values[t_perm], as the tile kernels want it
  PaddedCsr<T> wt;
  if (need_x) wt = pad_csr<T>(t_crow, t_col, values, t_perm, cols, rows);
  std::vector<T> t_vals_generic;
  if (!kAvx2 && need_x) {
    t_vals_generic.resize(static_cast<size_t>(nnz));
    for (int64_t q = 0; q < nnz; ++q) t_vals_generic[q] = values[t_perm[q]];
  }
#pragma omp parallel num_threads(nt)
  {
    const int tid = current_thread();
    T* gt = scratch.get() + tid * per_thread;
    T* xt = gt + gt_elems;
    T* dxt = xt + xt_elems;
    std::fill(gt + rows * kTile, gt + (rows + 1) * kTile, T(0));
#pragma omp for schedule(static)
    for (int64_t k = 0; k < nchunks; ++k) {
      T* part = partial.get() + k * part_elems;
      std::fill(part, part + part_elems, T(0));
      T* part_v = part;
      T* part_b = part + (need_v ? nnz : 0);
      const int64_t nb = k * chunk;
      const int64_t ne = std::min<int64_t>(N, nb + chunk);
      for (int64_t n0 = nb; n0 < ne; n0 += kTile) {
        const int64_t nr = std::min<int64_t>(kTile, ne - n0);
        if constexpr (kAvx2) {
#if GNNSPARSE_HAVE_AVX2_PATH
          load_tile_t_avx2<T>(G + n0 * rows, rows, nr, rows, gt);
          if (need_v) {
            load_tile_t_avx2<T>(X + n0 * cols, cols, nr, cols, xt);
            if (use512) {
              sddmm_tile_avx512<T>(gt, xt, crow, col, rows, part_v);
            } else {
              sddmm_tile_avx2<T>(gt, xt, crow, col, rows, part_v);
            }
          }
          if (need_x) {
            // prefetch the next dY tile into L2 while computing this dX tile
            const char* nx = nullptr;
            int64_t nbytes = 0;
            if (n0 + kTile < ne) {
              nx = reinterpret_cast<const char*>(G + (n0 + kTile) * rows);
              nbytes = std::min<int64_t>(kTile, ne - n0 - kTile) * rows * sizeof(T);
            }
            const int64_t lines = nbytes / 64;
            for (int64_t c0 = 0; c0 < cols; c0 += kRowChunk) {
              const int64_t cc = std::min(kRowChunk, cols - c0);
              const int64_t l0 = c0 * lines / cols, l1 = (c0 + cc) * lines / cols;
              const char* cpf = nx ? nx + l0 * 64 : nullptr;
              if (use512) {
                fwd_tile_avx512<T>(gt, wt.crow.data() + c0, wt.coff.data(), wt.val.data(), nullptr, cc,
                                   dxt, cpf, (l1 - l0) * 64);
              } else {
                fwd_tile_avx2<T>(gt, wt.crow.data() + c0, wt.coff.data(), wt.val.data(), nullptr, cc,
                                 dxt, cpf, (l1 - l0) * 64);
              }
              store_tile_t_avx2<T>(dxt, cc, nr, dX + n0 * cols + c0, cols, stream);
            }
          }
#endif
        } else {
          load_tile_t_generic<T>(G + n0 * rows, rows, nr, rows, gt);
          if (need_v) {
            load_tile_t_generic<T>(X + n0 * cols, cols, nr, cols, xt);
            sddmm_tile_generic<T>(gt, xt, crow, col, rows, part_v);
          }
          if (need_x) {
            for (int64_t c0 = 0; c0 < cols; c0 += kRowChunk) {
              const int64_t cc = std::min(kRowChunk, cols - c0);
              fwd_tile_generic<T>(gt, t_crow + c0, t_col, t_vals_generic.data(), nullptr, cc, dxt);
              store_tile_t_generic<T>(dxt, cc, nr, dX + n0 * cols + c0, cols);
            }
          }
        }
        if (need_b) bias_tile_add<T>(gt, rows, part_b);  // rows past N are zero in gt
      }
    }
#if GNNSPARSE_HAVE_AVX2_PATH
    if constexpr (kAvx2) {
      if (stream && need_x) _mm_sfence();
    }
#endif
  }
  // fixed-order reduction over chunks
  if (need_v) reduce_chunks<T>(partial.get(), nchunks, part_elems, 0, nnz, dV);
  if (need_b) reduce_chunks<T>(partial.get(), nchunks, part_elems, need_v ? nnz : 0, rows, dB);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> csr_linear_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& crow_indices,
    const at::Tensor& col_indices, const at::Tensor& values, const at::Tensor& t_crow,
    const at::Tensor& t_col, const at::Tensor& t_perm, bool need_x, bool need_values,
    bool need_bias) {
  constexpr const char* op = "gnnsparse::csr_linear_backward";
  check_grad_and_input(op, grad_out, x);
  check_grad_and_values(op, grad_out, values);
  const int64_t N = x.size(0);
  const int64_t in_f = x.size(1);
  const int64_t out_f = grad_out.size(1);
  const at::Tensor crow = crow_indices.contiguous();
  const at::Tensor col = col_indices.contiguous();
  const at::Tensor vals = values.contiguous();
  check_csr(op, crow, col, &vals, out_f, in_f, "out_features = grad_out.size(1)",
            "in_features = x.size(1)");
  const at::Tensor tc = t_crow.contiguous(), tcol = t_col.contiguous(), tp = t_perm.contiguous();
  check_csr_transpose(op, crow, col, tc, tcol, tp, out_f, in_f);
  const int64_t nnz = col.size(0);
  at::Tensor dx = need_x ? at::empty({N, in_f}, x.options()) : at::empty({0}, x.options());
  at::Tensor dv = need_values ? at::empty({nnz}, x.options()) : at::empty({0}, x.options());
  at::Tensor db = need_bias ? at::empty({out_f}, x.options()) : at::empty({0}, x.options());
  if (N == 0 || (!need_x && !need_values && !need_bias)) {
    dx.zero_();
    dv.zero_();
    db.zero_();
    return {dx, dv, db};
  }
  if (need_x && (in_f == 0 || nnz == 0 || out_f == 0)) dx.zero_();
  const bool run_x = need_x && in_f > 0 && nnz > 0 && out_f > 0;
  const at::Tensor g = grad_out.contiguous();
  const at::Tensor xc = x.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gnnsparse_csr_linear_backward", [&] {
    scalar_t* dxp = run_x ? dx.data_ptr<scalar_t>() : nullptr;
    scalar_t* dvp = (need_values && nnz > 0) ? dv.data_ptr<scalar_t>() : nullptr;
    scalar_t* dbp = (need_bias && out_f > 0) ? db.data_ptr<scalar_t>() : nullptr;
    if (!dxp && !dvp && !dbp) return;
    auto run = [&](auto avx) {
      backward_driver<scalar_t, decltype(avx)::value>(
          g.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(), N, out_f, in_f,
          crow.data_ptr<int64_t>(), col.data_ptr<int64_t>(), nnz, tc.data_ptr<int64_t>(),
          tcol.data_ptr<int64_t>(), vals.data_ptr<scalar_t>(), tp.data_ptr<int64_t>(), dxp, dvp, dbp);
    };
#if GNNSPARSE_HAVE_AVX2_PATH
    if (select_isa() == Isa::Avx2) {
      run(std::true_type{});
      return;
    }
#else
    (void)select_isa();
#endif
    run(std::false_type{});
  });
  return {dx, dv, db};
}

}  // namespace
}  // namespace cpu
}  // namespace gnnsparse

TORCH_LIBRARY_IMPL(gnnsparse, CPU, m) {
  m.impl("csr_linear_backward", &gnnsparse::cpu::csr_linear_backward_cpu);
}
