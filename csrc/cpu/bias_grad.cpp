// CPU kernel: bias_grad, column sums of grad_out [N, out] -> [out].
//
// Nodes are split into fixed-size chunks (size depends on N only); each chunk's
// column sums are accumulated row by row (vectorised across columns) into
// partial[chunk][out], then reduced in chunk order, so the result is
// bit-identical for any thread count. Memory bound, so one portable path.
#include "common.h"

#include <ATen/ops/empty.h>
#include <torch/library.h>

namespace gnnsparse {
namespace cpu {
namespace {

template <typename T>
void bias_grad_kernel(const T* __restrict G, int64_t N, int64_t out, T* __restrict result) {
  const int64_t chunk = reduction_chunk_nodes(N, out * static_cast<int64_t>(sizeof(T)));
  const int64_t nchunks = ceil_div(N, chunk);
  AlignedBuffer<T> partial_buf(nchunks > 1 ? nchunks * out : 1);
  T* partial = nchunks > 1 ? partial_buf.get() : result;
  const int nt = num_threads_for(nchunks);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t k = 0; k < nchunks; ++k) {
    T* __restrict part = partial + k * out;
    const int64_t nb = k * chunk;
    const int64_t ne = std::min<int64_t>(N, nb + chunk);
    const T* __restrict g0 = G + nb * out;
    for (int64_t o = 0; o < out; ++o) part[o] = g0[o];
    for (int64_t n = nb + 1; n < ne; ++n) {
      const T* __restrict g = G + n * out;
      for (int64_t o = 0; o < out; ++o) part[o] += g[o];
    }
  }
  if (nchunks > 1) {
    for (int64_t o = 0; o < out; ++o) result[o] = partial[o];
    for (int64_t k = 1; k < nchunks; ++k) {
      const T* __restrict part = partial + k * out;
      for (int64_t o = 0; o < out; ++o) result[o] += part[o];
    }
  }
}

at::Tensor bias_grad_cpu(const at::Tensor& grad_out) {
  constexpr const char* op = "gnnsparse::bias_grad";
  check_cpu(op, "grad_out", grad_out);
  check_dim(op, "grad_out", grad_out, 2);
  check_float_dtype(op, "grad_out", grad_out);
  const int64_t N = grad_out.size(0);
  const int64_t out = grad_out.size(1);
  at::Tensor result = at::empty({out}, grad_out.options());
  if (out == 0) return result;
  if (N == 0) {
    result.zero_();
    return result;
  }
  const at::Tensor g = grad_out.contiguous();
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "gnnsparse_bias_grad", [&] {
    bias_grad_kernel<scalar_t>(g.data_ptr<scalar_t>(), N, out, result.data_ptr<scalar_t>());
  });
  return result;
}

}  // namespace
}  // namespace cpu
}  // namespace gnnsparse

TORCH_LIBRARY_IMPL(gnnsparse, CPU, m) {
  m.impl("bias_grad", &gnnsparse::cpu::bias_grad_cpu);
}
