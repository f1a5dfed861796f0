// Row operations the C++ rollout steps share (gtrxl_step.cpp, slot_step.cpp, bit_step.cpp and
// fwp's step in rollout_steps.cpp): sums in eight interleaved partials, layer normalisation
// of rows, ATen's GELU in place.
#pragma once

#include <torch/extension.h>

#include <cmath>
#include <cstdint>

namespace memworld {

// The sum of term(i) for i < n in eight interleaved partial sums (independent, so the
// compiler runs them side by side in one vector register), then the partials: the order of
// a vectorised reduction, where one sum waits on each addition.
template <typename Term>
inline float sum8(int64_t n, Term term) {
  float part[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) part[l] += term(i + l);
  for (; i < n; ++i) part[0] += term(i);
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

inline float dot(const float* a, const float* b, int64_t d) {
  return sum8(d, [&](int64_t i) { return a[i] * b[i]; });
}

// Layer normalisation of each of ``rows`` rows of ``width`` values, from ``in`` into ``out``
// (biased variance, as torch's layer_norm).
inline void layer_norm_rows(const float* in, float* out, int64_t rows, int64_t width,
                            const float* weight, const float* bias, double eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = in + r * width;
    const float mean = sum8(width, [&](int64_t j) { return x[j]; }) / static_cast<float>(width);
    const float var =
        sum8(width, [&](int64_t j) { return (x[j] - mean) * (x[j] - mean); }) /
        static_cast<float>(width);
    const float inv = 1.0f / std::sqrt(var + static_cast<float>(eps));
    for (int64_t j = 0; j < width; ++j) out[r * width + j] = (x[j] - mean) * inv * weight[j] + bias[j];
  }
}

// ATen's exact GELU on n values in place (one vectorised call: nn.GELU's arithmetic).
inline void gelu_(float* v, int64_t n) {
  torch::Tensor t = torch::from_blob(v, {n}, torch::TensorOptions().dtype(torch::kFloat));
  at::gelu_(t);
}

}  // namespace memworld
