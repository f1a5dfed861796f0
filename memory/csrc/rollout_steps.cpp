// One rollout step of the lstm, gru, fwp, lru, gtrxl, slot and bit memories in C++: the
// torch calls of their Python steps (_Recurrent.step, FastWeightMemory.step, LRU.step), in
// the same order on the same tensors, and for fwp, gtrxl, slot and bit without grad a step
// whose elementwise work is plain loops (gtrxl_step.cpp, slot_step.cpp and bit_step.cpp,
// their products through BLAS directly, blas.cpp).
//
// At rollout sizes (8 rows, width 64) a torch call from Python costs 3-5 us whatever its
// arithmetic, and a step is 14 (lru) to 58 (gtrxl) of them; from C++ the same ATen calls
// cost about a microsecond each.  Where the calls are the same, the arithmetic is unchanged
// (the results equal the Python step's) and autograd records them as it would from Python.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "blas.h"
#include "rows.h"

namespace memworld {

// GTrXL.step without autograd: gtrxl_step.cpp.
std::vector<torch::Tensor> gtrxl_step_nograd(
    torch::Tensor x, torch::Tensor memory, torch::Tensor valid, torch::Tensor starts,
    std::vector<torch::Tensor> kv_memory, torch::Tensor in_weight, torch::Tensor in_bias,
    torch::Tensor plan, std::vector<int64_t> offsets, std::vector<double> eps,
    torch::Tensor norm_out_weight,
    torch::Tensor norm_out_bias, double norm_out_eps, int64_t heads);

// SlotMemory's rollout step without autograd: slot_step.cpp.
std::vector<torch::Tensor> slot_step_nograd(
    torch::Tensor x, std::vector<torch::Tensor> state, torch::Tensor starts, torch::Tensor plan,
    std::vector<int64_t> offsets, torch::Tensor write_tie, torch::Tensor read_tie,
    std::vector<double> eps, std::vector<int64_t> sizes, double age_scale, double usage_decay,
    bool reset_bank);

// BitMemory's rollout step (evaluation mode) without autograd: bit_step.cpp.
std::vector<torch::Tensor> bit_step_nograd(torch::Tensor x, std::vector<torch::Tensor> state,
                                           torch::Tensor starts, torch::Tensor plan,
                                           std::vector<int64_t> offsets,
                                           std::vector<int64_t> sizes);

}  // namespace memworld

namespace {

using memworld::layer_norm_rows;

using torch::Tensor;

// FastWeightMemory.step from its step_plan (see memory/fwp/module.py for the arithmetic).
// x (1, B, input), weights (B, H, dk, dk), valid (B, K - 1), recent (B, K - 1, d),
// starts (1, B) bool.  Returns y (1, B, d), fast weights, recent, recent_valid.
std::vector<Tensor> fwp_step(Tensor x, Tensor weights, Tensor valid, Tensor recent, Tensor starts,
                             Tensor in_weight, Tensor in_bias, Tensor norm_in_weight,
                             Tensor norm_in_bias, double norm_in_eps, Tensor taps,
                             Tensor proj_weight, Tensor proj_bias, Tensor gamma, Tensor out_weight,
                             Tensor norm_out_weight, Tensor norm_out_bias, double norm_out_eps,
                             int64_t heads) {
  const int64_t batch = x.size(1), d_model = norm_in_weight.size(0);
  const int64_t head_dim = d_model / heads;
  if (starts.any().item<bool>()) {
    Tensor rows = starts.to(torch::kBool).view({-1, 1});
    weights = weights.masked_fill(rows.view({-1, 1, 1, 1}), 0.0);
    valid = valid.masked_fill(rows, 0.0);
  }
  // One matmul gives u and u + out_proj.bias: (1, B, d) each.
  auto u_both = torch::linear(x, in_weight, in_bias).split(d_model, -1);
  Tensor u = u_both[0], u_out = u_both[1];
  Tensor z = torch::layer_norm(u, {d_model}, norm_in_weight, norm_in_bias, norm_in_eps);
  Tensor window = torch::cat({recent * valid.unsqueeze(-1), z.transpose(0, 1)}, 1);
  Tensor mixed = (window * taps).sum(1);  // (B, d)
  auto projected =
      torch::linear(mixed, proj_weight, proj_bias).split_with_sizes({2 * d_model, d_model, heads}, -1);
  auto qk = torch::softmax(projected[0].view({batch, 2, heads, 1, head_dim}), -1).unbind(1);
  Tensor value = projected[1].view({batch, heads, head_dim, 1}) *
                 torch::sigmoid(projected[2]).view({batch, heads, 1, 1});
  weights = torch::addcmul(weights * gamma, value, qk[1]);
  Tensor read = (weights * qk[0]).sum(-1).view({1, batch, d_model});
  Tensor y = torch::layer_norm(torch::baddbmm(u_out, read, out_weight), {d_model}, norm_out_weight,
                               norm_out_bias, norm_out_eps);
  Tensor new_valid = torch::constant_pad_nd(valid.slice(1, 1), {0, 1}, 1.0);
  return {y, weights, window.slice(1, 1), new_valid};
}

// fwp_step without autograd, for a rollout (no grad, float32, CPU): the three products
// through ATen and everything between them (the norms, the convolution, the softmax
// features, the write strength, the fast-weight write and read) as plain loops over the
// rows' values, one pass each, where fwp_step makes some thirty ATen calls.  The same
// arithmetic; sums may round in another order (within 1e-5 of fwp_step).
std::vector<Tensor> fwp_step_nograd(Tensor x, Tensor weights, Tensor valid, Tensor recent,
                                    Tensor starts, Tensor in_weight, Tensor in_bias,
                                    Tensor norm_in_weight, Tensor norm_in_bias, double norm_in_eps,
                                    Tensor taps, Tensor proj_weight, Tensor proj_bias, Tensor gamma,
                                    Tensor out_weight, Tensor norm_out_weight, Tensor norm_out_bias,
                                    double norm_out_eps, int64_t heads) {
  for (const Tensor* t : {&x, &weights, &valid, &recent, &norm_in_weight, &norm_in_bias, &taps,
                          &gamma, &norm_out_weight, &norm_out_bias})
    TORCH_CHECK(t->scalar_type() == torch::kFloat && t->device().is_cpu() && t->is_contiguous(),
                "fwp_step_nograd: every state and plan tensor must be contiguous float32 on the CPU");
  const int64_t batch = x.size(1), d = norm_in_weight.size(0), hd = d / heads;
  const int64_t context = recent.size(1), width = context + 1;  // K - 1 carried, K in all
  const Tensor start_rows = starts.to(torch::kBool).contiguous();  // held: read by pointer
  const bool* start = start_rows.data_ptr<bool>();
  // u and u + out_proj.bias: (B, 2d)
  Tensor both = torch::addmm(in_bias, x.view({batch, -1}), in_weight.t());
  const float* both_p = both.data_ptr<float>();
  Tensor z = torch::empty({batch, d}, x.options());
  float* z_p = z.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b)
    layer_norm_rows(both_p + b * 2 * d, z_p + b * d, 1, d, norm_in_weight.data_ptr<float>(),
                    norm_in_bias.data_ptr<float>(), norm_in_eps);
  // The window of the last K inputs of the episode, the convolution, the new recent inputs.
  Tensor new_recent = torch::empty_like(recent), new_valid = torch::empty_like(valid);
  Tensor mixed = torch::empty({batch, d}, x.options());
  const float *rec = recent.data_ptr<float>(), *val = valid.data_ptr<float>();
  const float* tap = taps.data_ptr<float>();
  float *nr = new_recent.data_ptr<float>(), *nv = new_valid.data_ptr<float>();
  float* mix = mixed.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t j = 0; j < d; ++j) mix[b * d + j] = 0.0f;
    for (int64_t k = 0; k < width; ++k) {
      const float keep = k < context ? (start[b] ? 0.0f : val[b * context + k]) : 1.0f;
      const float* in = k < context ? rec + (b * context + k) * d : z_p + b * d;
      for (int64_t j = 0; j < d; ++j) {
        const float w = in[j] * keep;
        mix[b * d + j] += w * tap[k * d + j];
        if (k > 0) nr[(b * context + k - 1) * d + j] = w;
      }
      if (k > 0) nv[b * context + k - 1] = keep;
    }
  }
  Tensor p = torch::addmm(proj_bias, mixed, proj_weight.t());  // (B, 3d + H)
  const float* pp = p.data_ptr<float>();
  Tensor new_weights = torch::empty_like(weights);
  Tensor read = torch::empty({batch, d}, x.options());
  const float *w_old = weights.data_ptr<float>(), *g = gamma.data_ptr<float>();
  float *w_new = new_weights.data_ptr<float>(), *rd = read.data_ptr<float>();
  std::vector<float> q(hd), k(hd);
  for (int64_t b = 0; b < batch; ++b) {
    const float* row = pp + b * (3 * d + heads);
    for (int64_t h = 0; h < heads; ++h) {
      for (int s = 0; s < 2; ++s) {  // softmax features of the query (s = 0) and key (s = 1)
        const float* a = row + s * d + h * hd;
        float* f = s == 0 ? q.data() : k.data();
        float top = a[0];
        for (int64_t i = 1; i < hd; ++i) top = std::max(top, a[i]);
        float total = 0.0f;
        for (int64_t i = 0; i < hd; ++i) total += (f[i] = std::exp(a[i] - top));
        for (int64_t i = 0; i < hd; ++i) f[i] /= total;
      }
      const float strength = 1.0f / (1.0f + std::exp(-row[3 * d + h]));
      const float decay = start[b] ? 0.0f : g[h];  // a row that starts drops its weights
      const int64_t base = (b * heads + h) * hd * hd;
      for (int64_t i = 0; i < hd; ++i) {
        const float v = row[2 * d + h * hd + i] * strength;
        float acc = 0.0f;
        for (int64_t j = 0; j < hd; ++j) {
          const float w = w_old[base + i * hd + j] * decay + v * k[j];
          w_new[base + i * hd + j] = w;
          acc += w * q[j];
        }
        rd[b * d + h * hd + i] = acc;
      }
    }
  }
  Tensor pre = torch::addmm(both.narrow(1, d, d), read, out_weight.select(0, 0));
  Tensor y = torch::empty({1, batch, d}, x.options());
  layer_norm_rows(pre.contiguous().data_ptr<float>(), y.data_ptr<float>(), batch, d,
                  norm_out_weight.data_ptr<float>(), norm_out_bias.data_ptr<float>(), norm_out_eps);
  return {y, new_weights, new_recent, new_valid};
}

// LRU.step from its step_plan (see memory/lru.py): x (1, B, input), h (B, L, N, 2),
// starts (1, B); per layer the LayerNorm's weight, bias and eps, the step weights, the GLU's
// weight and bias.  Returns y (1, B, d) and the new h.
std::vector<Tensor> lru_step(Tensor x, Tensor h, Tensor starts, Tensor in_weight, Tensor in_bias,
                             std::vector<Tensor> norm_weights, std::vector<Tensor> norm_biases,
                             std::vector<double> norm_eps, std::vector<Tensor> step_weights,
                             std::vector<Tensor> glu_weights, std::vector<Tensor> glu_biases,
                             Tensor norm_out_weight, Tensor norm_out_bias, double norm_out_eps) {
  const int64_t batch = x.size(1), layers = h.size(1), state_dim = h.size(2);
  const int64_t width = 2 * state_dim, d_model = norm_out_weight.size(0);
  if (starts.scalar_type() != torch::kBool) starts = starts.to(torch::kBool);
  // Zero the rows that start, always (one call, no host check).
  Tensor carried = h.masked_fill(starts.view({-1, 1, 1, 1}), 0.0).reshape({1, batch, layers * width});
  Tensor h_seq = torch::linear(x, in_weight, in_bias);
  std::vector<Tensor> finals;
  for (int64_t i = 0; i < layers; ++i) {
    Tensor u = torch::layer_norm(h_seq, {d_model}, norm_weights[i], norm_biases[i], norm_eps[i]);
    Tensor own = layers == 1 ? carried : carried.slice(-1, i * width, (i + 1) * width);
    auto parts = torch::linear(torch::cat({own, u}, -1), step_weights[i])
                     .split_with_sizes({width, d_model}, -1);
    finals.push_back(parts[0]);
    h_seq = h_seq + torch::glu(torch::linear(torch::gelu(parts[1]), glu_weights[i], glu_biases[i]));
  }
  Tensor new_h = layers == 1 ? finals[0] : torch::cat(finals, -1);
  Tensor y = torch::layer_norm(h_seq, {d_model}, norm_out_weight, norm_out_bias, norm_out_eps);
  new_h = new_h.view({batch, layers, state_dim, 2});
  if (new_h.scalar_type() != h.scalar_type()) new_h = new_h.to(h.scalar_type());
  return {y, new_h};
}

// _Recurrent.step (memory/recurrent.py): the rows that start zeroed (unless the module
// persists across episodes), then one torch.lstm_cell / torch.gru_cell a layer on
// nn.LSTM's / nn.GRU's flat weights.  x (B, input), hidden: h (B, L, H), and c for the
// LSTM; starts (B,).  Returns y (B, H) and the new h (and c), each (B, L, H).
std::vector<Tensor> recurrent_step(Tensor x, std::vector<Tensor> hidden, Tensor starts,
                                   std::vector<Tensor> weights, bool reset) {
  const bool lstm = hidden.size() == 2;
  const int64_t layers = hidden[0].size(1);
  if (reset && starts.any().item<bool>()) {
    Tensor rows = starts.to(torch::kBool).view({-1, 1, 1});
    for (auto& h : hidden) h = h.masked_fill(rows, 0.0);
  }
  Tensor inp = x;
  std::vector<std::vector<Tensor>> per_state(hidden.size());
  for (int64_t layer = 0; layer < layers; ++layer) {
    const Tensor *w = weights.data() + 4 * layer;  // w_ih, w_hh, b_ih, b_hh
    if (lstm) {
      auto [h, c] = torch::lstm_cell(inp, {hidden[0].select(1, layer), hidden[1].select(1, layer)},
                                     w[0], w[1], w[2], w[3]);
      per_state[0].push_back(h);
      per_state[1].push_back(c);
      inp = h;
    } else {
      inp = torch::gru_cell(inp, hidden[0].select(1, layer), w[0], w[1], w[2], w[3]);
      per_state[0].push_back(inp);
    }
  }
  std::vector<Tensor> out = {inp};
  for (const auto& states : per_state) out.push_back(torch::stack(states, 1));
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fwp_step", &fwp_step, "FastWeightMemory.step");
  m.def("fwp_step_nograd", &fwp_step_nograd, "FastWeightMemory.step without autograd");
  m.def("lru_step", &lru_step, "LRU.step");
  m.def("recurrent_step", &recurrent_step, "the LSTM's and GRU's step");
  m.def("gtrxl_step_nograd", &memworld::gtrxl_step_nograd, "GTrXL.step without autograd");
  m.def("slot_step_nograd", &memworld::slot_step_nograd, "SlotMemory's rollout step, no autograd");
  m.def("bit_step_nograd", &memworld::bit_step_nograd, "BitMemory's rollout step, no autograd");
  m.def("blas_direct", &memworld::blas_direct, "whether products call torch's BLAS directly");
  m.def("set_blas_direct", &memworld::set_blas_direct, "call BLAS directly where found (tests)");
}
