// Matrix products for memworld's C++ kernels through the BLAS torch carries (blas.cpp).
#pragma once

#include <torch/extension.h>

#include <cstdint>

namespace memworld {

using torch::Tensor;

// Whether products call torch's BLAS directly (else ATen's addmm), and a switch for tests
// (returns the setting before).
bool blas_direct();
bool set_blas_direct(bool wanted);

// C (m, n; rows ldc apart) = beta C + A (m, k; rows lda apart) . B (k, n), where B's element
// (i, j) is b[i * rs + j * cs] and one of rs, cs is 1.
void gemm(const float* a, int64_t lda, int64_t m, int64_t k, const float* b, int64_t rs,
          int64_t cs, int64_t n, float beta, float* c, int64_t ldc);

// out (rows, n) = bias + in (rows, k; contiguous) . weight^T for a row-major weight (n, k)
// whose rows are ldw apart (an nn.Linear's); with bias null, out += in . weight^T.
void linear(const float* in, int64_t rows, int64_t k, const float* weight, int64_t ldw,
            const float* bias, int64_t n, float* out);

}  // namespace memworld
