// The step loops of memory/fused_rnn.py's GRU and LSTM kernels, in C++.
//
// Each function is the loop of the Python kernel of the same name, step for step: the
// recurrent product of a step goes through ATen (addmm_, a BLAS call), everything
// elementwise is a plain loop over the step's (B, H) values.  At the sizes memworld trains
// (a few rows, hidden 64-256) a step's Python loop costs more in per-call overhead than in
// arithmetic; here a step is one BLAS call, one or two vectorised ATen calls for the
// sigmoids and tanh, and plain loops for the rest.  Everything outside the loops
// (the input projections, the factors that do not depend on the gradient, the weight
// gradients) stays in Python.  Float32, CPU, contiguous tensors except where noted
// (memory/fused_rnn.py passes them so, and each function checks).
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <utility>
#include <vector>

namespace {

// The tensors a loop reads or writes through raw pointers: float32, on the CPU, contiguous.
void check_raw(std::initializer_list<std::pair<const char*, const torch::Tensor*>> tensors) {
  for (const auto& [name, t] : tensors)
    TORCH_CHECK(t->scalar_type() == torch::kFloat && t->device().is_cpu() && t->is_contiguous(),
                "rnn_loops: ", name, " must be a contiguous float32 CPU tensor");
}

// torch.lerp's formula (ATen's CPU kernel), so the result rounds as the Python loop's.
inline float lerp(float start, float end, float weight) {
  return std::abs(weight) < 0.5f ? start + weight * (end - start)
                                 : end - (end - start) * (1.0f - weight);
}

// GRUSequence.forward's loop.  pre (T, B, 3H): the addend [gi_r, gi_z, 2 b_hn], turned in
// place into [pre r, pre z, 2 hn]; gi_n2 (T, B, H); keep (T, B); w_hh_t (H, 3H), any
// strides; h0 (B, H).  Writes out (T, B, H), rz (T, B, 2H) and n (T, B, H).
void gru_forward(torch::Tensor pre, torch::Tensor gi_n2, torch::Tensor keep,
                 std::vector<bool> resets, torch::Tensor w_hh_t, torch::Tensor h0,
                 torch::Tensor out, torch::Tensor rz, torch::Tensor n) {
  check_raw({{"pre", &pre}, {"gi_n2", &gi_n2}, {"keep", &keep}, {"h0", &h0}, {"out", &out},
             {"rz", &rz}, {"n", &n}});
  const int64_t steps = pre.size(0), batch = pre.size(1), hidden = h0.size(1);
  const int64_t three = 3 * hidden, two = 2 * hidden;
  torch::Tensor carried = torch::empty_like(h0);
  torch::Tensor h = h0;
  const float* keep_p = keep.data_ptr<float>();
  for (int64_t t = 0; t < steps; ++t) {
    torch::Tensor hp = h;
    if (resets[t]) {
      const float* h_p = h.data_ptr<float>();
      float* c_p = carried.data_ptr<float>();
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t j = 0; j < hidden; ++j)
          c_p[b * hidden + j] = h_p[b * hidden + j] * keep_p[t * batch + b];
      hp = carried;
    }
    torch::Tensor pre_t = pre.select(0, t);
    pre_t.addmm_(hp, w_hh_t);
    torch::Tensor rz_t = rz.select(0, t), n_t = n.select(0, t);
    torch::sigmoid_out(rz_t, pre_t.narrow(1, 0, two));  // vectorised: r, z
    const float* p = pre_t.data_ptr<float>();
    const float* hp_p = hp.data_ptr<float>();
    const float* gn = gi_n2.data_ptr<float>() + t * batch * hidden;
    const float* rz_p = rz_t.data_ptr<float>();
    float* n_p = n_t.data_ptr<float>();
    float* out_p = out.data_ptr<float>() + t * batch * hidden;
    for (int64_t b = 0; b < batch; ++b)  // n's pre-activation, doubled: 2 gi_n + r 2 hn
      for (int64_t j = 0; j < hidden; ++j)
        n_p[b * hidden + j] = gn[b * hidden + j] + rz_p[b * two + j] * p[b * three + two + j];
    n_t.sigmoid_();
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t j = 0; j < hidden; ++j) {
        const float nv = 2.0f * n_p[b * hidden + j] - 1.0f;  // tanh(a) = 2 sigmoid(2a) - 1
        n_p[b * hidden + j] = nv;
        out_p[b * hidden + j] = lerp(nv, hp_p[b * hidden + j], rz_p[b * two + hidden + j]);
      }
    }
    h = out.select(0, t);
  }
}

// GRUSequence.backward's loop.  to_n, to_r, to_z, d_out (T, B, H); rz (T, B, 2H);
// keep (T, B); w_hh_nrz (3H, H); d_gates (T, B, 4H) is written: [d hn, d r, d z, d n].
// Returns the gradient of h0 (B, H).
torch::Tensor gru_backward(torch::Tensor to_n, torch::Tensor to_r, torch::Tensor to_z,
                           torch::Tensor rz, torch::Tensor keep, std::vector<bool> resets,
                           torch::Tensor d_out, torch::Tensor w_hh_nrz, torch::Tensor d_gates) {
  check_raw({{"to_n", &to_n}, {"to_r", &to_r}, {"to_z", &to_z}, {"rz", &rz}, {"keep", &keep},
             {"d_out", &d_out}, {"d_gates", &d_gates}});
  const int64_t steps = d_out.size(0), batch = d_out.size(1), hidden = d_out.size(2);
  const int64_t two = 2 * hidden, four = 4 * hidden, size = batch * hidden;
  torch::Tensor dh = d_out.select(0, steps - 1).clone();
  torch::Tensor next = torch::empty_like(dh), zeros = torch::zeros_like(dh);
  const float* keep_p = keep.data_ptr<float>();
  const float* d_out_p = d_out.data_ptr<float>();
  for (int64_t t = steps - 1; t >= 0; --t) {
    const bool reset = resets[t];
    const float* dh_p = dh.data_ptr<float>();
    const float* tn = to_n.data_ptr<float>() + t * size;
    const float* tr = to_r.data_ptr<float>() + t * size;
    const float* tz = to_z.data_ptr<float>() + t * size;
    const float* rz_p = rz.data_ptr<float>() + t * batch * two;
    float* g = d_gates.data_ptr<float>() + t * batch * four;
    // d_out[t - 1]: the previous step's own gradient
    const float* step_grad = t > 0 ? d_out_p + (t - 1) * size : zeros.data_ptr<float>();
    float* next_p = next.data_ptr<float>();
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t j = 0; j < hidden; ++j) {
        const int64_t i = b * hidden + j;
        const float d_n = dh_p[i] * tn[i];
        g[b * four + j] = d_n * rz_p[b * two + j];                 // d hn = d_n * r
        g[b * four + hidden + j] = d_n * tr[i];                    // d r
        g[b * four + two + j] = dh_p[i] * tz[i];                   // d z
        g[b * four + 3 * hidden + j] = d_n;                        // d n
      }
    }
    // dh * z, plus (where no row starts) the step's own gradient, into the product's addend
    for (int64_t b = 0; b < batch; ++b) {
      const float* z = rz_p + b * two + hidden;
      float* row = next_p + b * hidden;
      if (reset)
        for (int64_t j = 0; j < hidden; ++j) row[j] = dh_p[b * hidden + j] * z[j];
      else
        for (int64_t j = 0; j < hidden; ++j)
          row[j] = step_grad[b * hidden + j] + dh_p[b * hidden + j] * z[j];
    }
    next.addmm_(d_gates.select(0, t).narrow(1, 0, 3 * hidden), w_hh_nrz);
    if (reset) {  // only the carried part is masked
      for (int64_t b = 0; b < batch; ++b) {
        const float k = keep_p[t * batch + b];
        for (int64_t j = 0; j < hidden; ++j)
          next_p[b * hidden + j] = step_grad[b * hidden + j] + next_p[b * hidden + j] * k;
      }
    }
    std::swap(dh, next);
  }
  return dh;
}

// LSTMSequence.forward's loop.  gi (T, B, 4H): input gates (g's rows doubled), turned in
// place into the pre-activations; keep (T, B); w_hh_t (H, 4H), any strides; h0, c0 (B, H).
// Writes gates (T, B, 4H: sigmoid i, f, tanh g, sigmoid o), cells and out (T, B, H).
void lstm_forward(torch::Tensor gi, torch::Tensor keep, std::vector<bool> resets,
                  torch::Tensor w_hh_t, torch::Tensor h0, torch::Tensor c0,
                  torch::Tensor gates, torch::Tensor cells, torch::Tensor out) {
  check_raw({{"gi", &gi}, {"keep", &keep}, {"h0", &h0}, {"c0", &c0}, {"gates", &gates},
             {"cells", &cells}, {"out", &out}});
  const int64_t steps = gi.size(0), batch = gi.size(1), hidden = h0.size(1);
  const int64_t four = 4 * hidden, size = batch * hidden;
  torch::Tensor h_carried = torch::empty_like(h0), c_carried = torch::empty_like(c0);
  torch::Tensor tanh_c = torch::empty_like(c0);
  torch::Tensor h = h0, c = c0;
  const float* keep_p = keep.data_ptr<float>();
  for (int64_t t = 0; t < steps; ++t) {
    if (resets[t]) {
      const float *h_p = h.data_ptr<float>(), *c_p = c.data_ptr<float>();
      float *hc = h_carried.data_ptr<float>(), *cc = c_carried.data_ptr<float>();
      for (int64_t b = 0; b < batch; ++b) {
        const float k = keep_p[t * batch + b];
        for (int64_t j = 0; j < hidden; ++j) {
          hc[b * hidden + j] = h_p[b * hidden + j] * k;
          cc[b * hidden + j] = c_p[b * hidden + j] * k;
        }
      }
      h = h_carried;
      c = c_carried;
    }
    torch::Tensor gi_t = gi.select(0, t);
    gi_t.addmm_(h, w_hh_t);
    torch::Tensor g_t = gates.select(0, t), c_t = cells.select(0, t);
    torch::sigmoid_out(g_t, gi_t);  // vectorised: all four gates
    const float* c_p = c.data_ptr<float>();
    float* g = g_t.data_ptr<float>();
    float* cell = c_t.data_ptr<float>();
    float* tanh_p = tanh_c.data_ptr<float>();
    for (int64_t b = 0; b < batch; ++b) {
      float* row = g + b * four;
      for (int64_t j = 0; j < hidden; ++j) {
        const float gg = 2.0f * row[2 * hidden + j] - 1.0f;  // tanh(a) = 2 sigmoid(2a) - 1
        row[2 * hidden + j] = gg;
        cell[b * hidden + j] = row[hidden + j] * c_p[b * hidden + j] + row[j] * gg;
      }
    }
    torch::tanh_out(tanh_c, c_t);
    float* out_t = out.data_ptr<float>() + t * size;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t j = 0; j < hidden; ++j)
        out_t[b * hidden + j] = g[b * four + 3 * hidden + j] * tanh_p[b * hidden + j];
    h = out.select(0, t);
    c = cells.select(0, t);
  }
}

// LSTMSequence.backward's loop.  dh_to_dc, dh_to_pre_o, d_out (T, B, H); dc_to_pre
// (T, B, 3, H); gates (T, B, 4H) for f; keep (T, B); w_hh (4H, H); dc the gradient of the
// last cell state (B, H).  Writes d_pre (T, B, 4H); returns the gradients of h0 and c0.
std::vector<torch::Tensor> lstm_backward(torch::Tensor dh_to_dc, torch::Tensor dc_to_pre,
                                         torch::Tensor dh_to_pre_o, torch::Tensor gates,
                                         torch::Tensor keep, std::vector<bool> resets,
                                         torch::Tensor d_out, torch::Tensor w_hh,
                                         torch::Tensor dc, torch::Tensor d_pre) {
  const int64_t steps = d_out.size(0), batch = d_out.size(1), hidden = d_out.size(2);
  check_raw({{"dh_to_dc", &dh_to_dc}, {"dc_to_pre", &dc_to_pre}, {"dh_to_pre_o", &dh_to_pre_o},
             {"gates", &gates}, {"keep", &keep}, {"d_out", &d_out}, {"dc", &dc},
             {"d_pre", &d_pre}});
  const int64_t four = 4 * hidden, size = batch * hidden;
  bool any_reset = false;
  for (bool r : resets) any_reset = any_reset || r;
  torch::Tensor dh = d_out.select(0, steps - 1).clone();
  torch::Tensor next = torch::empty_like(dh), zeros = torch::zeros_like(dh);
  dc = dc.clone();
  float* dc_p = dc.data_ptr<float>();
  const float* keep_p = keep.data_ptr<float>();
  const float* d_out_p = d_out.data_ptr<float>();
  for (int64_t t = steps - 1; t >= 0; --t) {
    const float* dh_p = dh.data_ptr<float>();
    const float* to_dc = dh_to_dc.data_ptr<float>() + t * size;
    const float* to_pre = dc_to_pre.data_ptr<float>() + t * 3 * size;
    const float* to_o = dh_to_pre_o.data_ptr<float>() + t * size;
    float* d = d_pre.data_ptr<float>() + t * batch * four;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t j = 0; j < hidden; ++j) {
        const int64_t i = b * hidden + j;
        const float dcv = dc_p[i] + dh_p[i] * to_dc[i];
        dc_p[i] = dcv;
        for (int64_t k = 0; k < 3; ++k)
          d[b * four + k * hidden + j] = dcv * to_pre[(b * 3 + k) * hidden + j];
        d[b * four + 3 * hidden + j] = dh_p[i] * to_o[i];
      }
    }
    torch::Tensor d_pre_t = d_pre.select(0, t);
    // d_out[t - 1]: the previous step's own gradient
    const float* step_grad = t > 0 ? d_out_p + (t - 1) * size : zeros.data_ptr<float>();
    float* next_p = next.data_ptr<float>();
    if (resets[t]) {  // only the carried part is masked
      torch::mm_out(next, d_pre_t, w_hh);
      for (int64_t b = 0; b < batch; ++b) {
        const float k = keep_p[t * batch + b];
        for (int64_t j = 0; j < hidden; ++j)
          next_p[b * hidden + j] = step_grad[b * hidden + j] + next_p[b * hidden + j] * k;
      }
    } else {  // the step's own gradient rides in the product's addend
      std::copy(step_grad, step_grad + size, next_p);
      next.addmm_(d_pre_t, w_hh);
    }
    const float* g = gates.data_ptr<float>() + t * batch * four;
    for (int64_t b = 0; b < batch; ++b) {  // dc_t -> dc_{t-1}: times f (and keep)
      const float* f = g + b * four + hidden;
      float* row = dc_p + b * hidden;
      if (any_reset) {
        const float k = keep_p[t * batch + b];
        for (int64_t j = 0; j < hidden; ++j) row[j] = row[j] * (f[j] * k);
      } else {
        for (int64_t j = 0; j < hidden; ++j) row[j] = row[j] * f[j];
      }
    }
    std::swap(dh, next);
  }
  return {dh, dc};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gru_forward", &gru_forward, "GRUSequence.forward's step loop");
  m.def("gru_backward", &gru_backward, "GRUSequence.backward's step loop");
  m.def("lstm_forward", &lstm_forward, "LSTMSequence.forward's step loop");
  m.def("lstm_backward", &lstm_backward, "LSTMSequence.backward's step loop");
}
