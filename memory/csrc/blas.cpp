// Matrix products for memworld's C++ kernels through the BLAS that torch's CPU library
// carries, called directly (part of the rollout_steps extension; memory/native.py).
//
// At the sizes memworld steps (a few rows, widths 64-256) ATen's addmm spends 3-5 us a call
// on dispatch, checks and its output tensor, about as much as the product.  The BLAS is
// looked up in torch's own library (so that no other BLAS in the process, with other
// integer widths, is picked up) and called with 32-bit integers, as ATen declares it; where
// torch does not export it (builds without MKL), the products run through ATen's addmm.
#include "blas.h"

#include <dlfcn.h>

#include <algorithm>

namespace memworld {

namespace {

using Sgemm = void (*)(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc);

Sgemm found() {
  static const Sgemm sgemm = [] {
    void* torch_cpu = dlopen("libtorch_cpu.so", RTLD_NOW | RTLD_NOLOAD);
    return torch_cpu == nullptr ? nullptr : reinterpret_cast<Sgemm>(dlsym(torch_cpu, "sgemm_"));
  }();
  return sgemm;
}

bool direct_wanted = true;  // set_blas_direct: tests run the ATen path too

int to_int(int64_t v) { return static_cast<int>(v); }

}  // namespace

bool blas_direct() { return direct_wanted && found() != nullptr; }

bool set_blas_direct(bool wanted) {
  const bool before = direct_wanted;
  direct_wanted = wanted;
  return before;
}

void gemm(const float* a, int64_t lda, int64_t m, int64_t k, const float* b, int64_t rs,
          int64_t cs, int64_t n, float beta, float* c, int64_t ldc) {
  TORCH_CHECK(rs == 1 || cs == 1, "gemm: one of B's strides must be 1");
  if (blas_direct()) {
    // Column-major: C^T (n, m) = B^T (n, k) . A^T (k, m).
    const bool rows_contiguous = cs == 1;  // B^T is then column-major with leading dim rs
    const char* trans_b = rows_contiguous ? "N" : "T";
    const int ld_b = to_int(rows_contiguous ? rs : cs), ld_a = to_int(lda), ld_c = to_int(ldc);
    const int m_ = to_int(n), n_ = to_int(m), k_ = to_int(k);
    const float one = 1.0f;
    found()(trans_b, "N", &m_, &n_, &k_, &one, b, &ld_b, a, &ld_a, &beta, c, &ld_c);
    return;
  }
  const auto opts = torch::TensorOptions().dtype(torch::kFloat);
  Tensor out = torch::from_blob(c, {m, n}, {ldc, 1}, opts);
  Tensor left = torch::from_blob(const_cast<float*>(a), {m, k}, {lda, 1}, opts);
  Tensor right = torch::from_blob(const_cast<float*>(b), {k, n}, {rs, cs}, opts);
  if (beta == 0.0f)
    torch::mm_out(out, left, right);
  else
    out.addmm_(left, right, beta, 1.0f);
}

void linear(const float* in, int64_t rows, int64_t k, const float* weight, int64_t ldw,
            const float* bias, int64_t n, float* out) {
  if (bias != nullptr)
    for (int64_t r = 0; r < rows; ++r) std::copy(bias, bias + n, out + r * n);
  gemm(in, k, rows, k, weight, 1, ldw, n, 1.0f, out, n);  // B = weight^T: (i, j) at j ldw + i
}

}  // namespace memworld
