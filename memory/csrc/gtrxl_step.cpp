// GTrXL's rollout step without autograd in C++ (memory/gtrxl/module.py GTrXL.step): the
// products through the BLAS torch carries (blas.cpp), everything between them as plain loops.  Part of
// the rollout_steps extension (rollout_steps.cpp binds it).
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "blas.h"
#include "rows.h"

namespace memworld {

using torch::Tensor;

namespace {

// A GRU-type gate of GTrXL (memory/gtrxl.py gate_step) on (B, d) rows, into ``out``: x the
// hidden state, y the input; weight (3d, 2d) acts on [y, x], bias (3d), candidate U_g
// (d, d).  out = x + sigmoid(z) * (tanh(W_g y + U_g (sigmoid(r) * x)) - x).
void gate_rows(const float* x, const float* y, int64_t batch, int64_t d, const float* weight,
               const float* bias, const float* candidate, float* out) {
  std::vector<float> both(batch * 2 * d), pre(batch * 3 * d), rx(batch * d), wg(batch * d);
  for (int64_t b = 0; b < batch; ++b) {
    std::copy(y + b * d, y + (b + 1) * d, both.data() + b * 2 * d);
    std::copy(x + b * d, x + (b + 1) * d, both.data() + b * 2 * d + d);
  }
  linear(both.data(), batch, 2 * d, weight, 2 * d, bias, 3 * d, pre.data());
  // ATen's vectorised sigmoid and tanh (a call costs about a microsecond from C++, where
  // libm's scalar functions took several times that at 8 x 64 values).
  const auto opts = torch::TensorOptions().dtype(torch::kFloat);
  torch::from_blob(pre.data(), {batch, 3 * d}, opts).narrow(1, 0, 2 * d).sigmoid_();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < d; ++i) {
      rx[b * d + i] = pre[b * 3 * d + i] * x[b * d + i];
      wg[b * d + i] = pre[b * 3 * d + 2 * d + i];
    }
  linear(rx.data(), batch, d, candidate, d, nullptr, d, wg.data());  // wg += U_g (r x)
  torch::from_blob(wg.data(), {batch * d}, opts).tanh_();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < d; ++i) {
      const float xi = x[b * d + i];
      out[b * d + i] = xi + pre[b * 3 * d + d + i] * (wg[b * d + i] - xi);
    }
}

void relu_rows(std::vector<float>& v) {
  for (float& e : v) e = std::max(e, 0.0f);
}

}  // namespace

// GTrXL.step without autograd (no grad, float32, CPU; see memory/gtrxl.py): the products
// through BLAS (linear_rows) and everything between them (the layer norms, the attention
// over the M + 1 places, the gates' elementwise work) as plain loops.  x (1, B, input),
// memory (B, L, M, d), valid (B, M), starts (1, B); kv_memory empty, or per layer the keys
// and values of the memory's places (B, M, 2d) from earlier steps with the same weights;
// per layer 19 plan tensors, all flattened into one at ``offsets`` (GTrXL._native_plan),
// and its two layer norms' eps.  Returns
// y (1, B, d), the new memory, the new valid flags and per layer the keys and values of the
// new memory's places (B, M, 2d).
std::vector<Tensor> gtrxl_step_nograd(Tensor x, Tensor memory, Tensor valid, Tensor starts,
                                      std::vector<Tensor> kv_memory, Tensor in_weight,
                                      Tensor in_bias, Tensor plan, std::vector<int64_t> offsets,
                                      std::vector<double> eps, Tensor norm_out_weight,
                                      Tensor norm_out_bias, double norm_out_eps, int64_t heads) {
  x = x.reshape({-1, x.size(-1)}).contiguous();  // (B, input)
  const int64_t batch = x.size(0), layers = memory.size(1), places = memory.size(2);
  const int64_t d = memory.size(3), hd = d / heads, span = places + 1;
  TORCH_CHECK(offsets.size() == static_cast<size_t>(19 * layers) &&
                  eps.size() == offsets.size() / 19 * 2,
              "gtrxl_step_nograd: 19 plan offsets and two eps a layer");
  TORCH_CHECK(kv_memory.empty() || kv_memory.size() == static_cast<size_t>(layers),
              "gtrxl_step_nograd: kv_memory holds one tensor a layer, or none");
  memory = memory.contiguous();
  valid = valid.contiguous();
  for (const Tensor* t : {&x, &memory, &valid, &in_weight, &in_bias, &norm_out_weight, &norm_out_bias})
    TORCH_CHECK(t->scalar_type() == torch::kFloat && t->device().is_cpu() && t->is_contiguous(),
                "gtrxl_step_nograd: the input, state and plan must be contiguous float32 on the CPU");
  TORCH_CHECK(plan.scalar_type() == torch::kFloat && plan.is_contiguous() && plan.device().is_cpu(),
              "gtrxl_step_nograd: the plan must be one contiguous float32 CPU tensor");
  const Tensor start_rows = starts.to(torch::kBool).contiguous();  // held: read by pointer
  const bool* start = start_rows.data_ptr<bool>();
  // The places a step sees (its memory's valid places unless the row starts, and itself)
  // and the new valid flags.
  std::vector<float> visible(batch * span);
  Tensor new_valid = torch::empty_like(valid);
  const float* val = valid.data_ptr<float>();
  float* nv = new_valid.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t j = 0; j < places; ++j) visible[b * span + j] = start[b] ? 0.0f : val[b * places + j];
    visible[b * span + places] = 1.0f;
    for (int64_t j = 0; j < places; ++j) nv[b * places + j] = visible[b * span + j + 1];
  }
  std::vector<float> h(batch * d), y(batch * d), normed(batch * d), qkv(batch * 3 * d);
  std::vector<float> mixed(batch * d), attended(batch * d), score(span);
  std::vector<float> hidden, mlp_out(batch * d), normed_places;
  linear(x.data_ptr<float>(), batch, x.size(1), in_weight.data_ptr<float>(), x.size(1),
              in_bias.data_ptr<float>(), d, h.data());
  Tensor new_memory = torch::empty_like(memory);
  const float* mem = memory.data_ptr<float>();
  float* nm = new_memory.data_ptr<float>();
  std::vector<Tensor> out = {Tensor(), new_memory, new_valid};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int64_t layer = 0; layer < layers; ++layer) {
    const float* p[19];  // this layer's plan tensors
    for (int i = 0; i < 19; ++i) p[i] = plan.data_ptr<float>() + offsets[19 * layer + i];
    const float *ln1_w = p[0], *ln1_b = p[1];
    const float *qkv_w = p[2], *qkv_b = p[3];
    const float* bias = p[4];  // (H, 1, M + 1), by reversed distance
    // The new memory: the places after the first, the step last, zero outside the episode.
    for (int64_t b = 0; b < batch; ++b) {
      const float* src = mem + (b * layers + layer) * places * d;
      float* dst = nm + (b * layers + layer) * places * d;
      for (int64_t j = 0; j < places; ++j) {
        const float* row = j + 1 < places ? src + (j + 1) * d : h.data() + b * d;
        if (nv[b * places + j] != 0.0f)  // valid flags are 0 or 1
          std::copy(row, row + d, dst + j * d);
        else
          std::fill(dst + j * d, dst + (j + 1) * d, 0.0f);
      }
    }
    // Keys and values of every place (B, M + 1, 2d): the memory's, then the step's.
    Tensor kv = torch::empty({batch, span, 2 * d}, x.options());
    float* kvp = kv.data_ptr<float>();
    if (kv_memory.empty()) {
      normed_places.resize(places * d);
      for (int64_t b = 0; b < batch; ++b) {
        layer_norm_rows(mem + (b * layers + layer) * places * d, normed_places.data(), places, d,
                        ln1_w, ln1_b, eps[2 * layer]);
        linear(normed_places.data(), places, d, qkv_w + d * d, d, qkv_b + d, 2 * d,
                    kvp + b * span * 2 * d);
      }
    } else {  // rows of 2d contiguous values, a batch row's places next to each other
      Tensor given = kv_memory[layer];
      if (given.stride(2) != 1 || given.stride(1) != 2 * d) given = given.contiguous();
      TORCH_CHECK(given.scalar_type() == torch::kFloat &&
                      given.sizes() == torch::IntArrayRef({batch, places, 2 * d}),
                  "gtrxl_step_nograd: kv_memory[layer] must be float32 (B, M, 2d)");
      const float* g = given.data_ptr<float>();
      for (int64_t b = 0; b < batch; ++b)
        std::copy(g + b * given.stride(0), g + b * given.stride(0) + places * 2 * d,
                  kvp + b * span * 2 * d);
    }
    layer_norm_rows(h.data(), normed.data(), batch, d, ln1_w, ln1_b, eps[2 * layer]);
    linear(normed.data(), batch, d, qkv_w, d, qkv_b, 3 * d, qkv.data());  // (B, 3d)
    for (int64_t b = 0; b < batch; ++b)
      std::copy(qkv.data() + b * 3 * d + d, qkv.data() + (b + 1) * 3 * d,
                kvp + (b * span + places) * 2 * d);
    // Attention of the step's query over the places it sees, each head apart.
    std::fill(mixed.begin(), mixed.end(), 0.0f);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t head = 0; head < heads; ++head) {
        const float* q = qkv.data() + b * 3 * d + head * hd;
        const float* keys = kvp + b * span * 2 * d + head * hd;
        // Eight places' dot products side by side: independent sums (each in the order
        // of i), where one place at a time waits on each addition.
        for (int64_t j0 = 0; j0 < span; j0 += 8) {
          const int64_t n = std::min<int64_t>(8, span - j0);
          float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
          for (int64_t i = 0; i < hd; ++i)
            for (int64_t t = 0; t < n; ++t) acc[t] += q[i] * keys[(j0 + t) * 2 * d + i];
          for (int64_t t = 0; t < n; ++t) score[j0 + t] = acc[t] * scale + bias[head * span + j0 + t];
        }
        float top = -INFINITY;
        for (int64_t j = 0; j < span; ++j)
          if (visible[b * span + j] != 0.0f) top = std::max(top, score[j]);
        float total = 0.0f;
        for (int64_t j = 0; j < span; ++j)
          total += (score[j] = visible[b * span + j] == 0.0f ? 0.0f : std::exp(score[j] - top));
        float* m = mixed.data() + b * d + head * hd;
        for (int64_t j = 0; j < span; ++j) {
          if (score[j] == 0.0f) continue;
          const float w = score[j] / total;
          const float* v = kvp + (b * span + j) * 2 * d + d + head * hd;
          for (int64_t i = 0; i < hd; ++i) m[i] += w * v[i];
        }
      }
    linear(mixed.data(), batch, d, p[5], d, p[6], d,
                attended.data());
    relu_rows(attended);
    gate_rows(h.data(), attended.data(), batch, d, p[7], p[8],
              p[9], y.data());
    layer_norm_rows(y.data(), normed.data(), batch, d, p[10],
                    p[11], eps[2 * layer + 1]);
    const int64_t width = (offsets[19 * layer + 13] - offsets[19 * layer + 12]) / d;  // MLP's
    hidden.resize(batch * width);
    linear(normed.data(), batch, d, p[12], d, p[13], width,
                hidden.data());
    relu_rows(hidden);
    linear(hidden.data(), batch, width, p[14], width,
                p[15], d, mlp_out.data());
    relu_rows(mlp_out);
    gate_rows(y.data(), mlp_out.data(), batch, d, p[16], p[17],
              p[18], h.data());
    out.push_back(kv.narrow(1, 1, places));
  }
  Tensor result = torch::empty({1, batch, d}, x.options());
  layer_norm_rows(h.data(), result.data_ptr<float>(), batch, d, norm_out_weight.data_ptr<float>(),
                  norm_out_bias.data_ptr<float>(), norm_out_eps);
  out[0] = result;
  return out;
}

}  // namespace memworld
