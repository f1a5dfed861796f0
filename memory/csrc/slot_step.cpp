// SlotMemory's rollout step without autograd in C++ (memory/slot/rollout.py rollout_step,
// transformer controller): the products through the BLAS torch carries (blas.cpp), the
// slot scan and the top-k choices, the sparse attention, the writes and the reads, the
// layer norms and the controller's attention as plain loops.  Part of the rollout_steps
// extension (rollout_steps.cpp binds it).
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "blas.h"
#include "rows.h"

namespace memworld {

namespace {

// torch's softplus (beta 1, threshold 20).
float softplus(float v) { return v > 20.0f ? v : std::log1p(std::exp(v)); }

float sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

// v / max(|v|, 1e-12) over d values, into out (F.normalize).
void normalize(const float* v, float* out, int64_t d) {
  const float norm = std::max(std::sqrt(dot(v, v, d)), 1e-12f);
  for (int64_t i = 0; i < d; ++i) out[i] = v[i] / norm;
}

// The k largest of n scores, largest first (torch.topk's order; the callers' tie-breaks
// make the scores distinct), in one pass: each score is placed into the sorted list of the
// best so far.
template <typename T>
void top_k(const T* score, int64_t n, int64_t k, int64_t* index) {
  int64_t filled = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (filled == k && !(score[i] > score[index[k - 1]])) continue;
    int64_t at = filled < k ? filled++ : k - 1;
    for (; at > 0 && score[i] > score[index[at - 1]]; --at) index[at] = index[at - 1];
    index[at] = i;
  }
}

// sparse_attention (memory/slot/bank.py) for one head: softmax over the k slots of
// strength * cos(key, slot) (+ bias).  key_unit (D), slots: k rows of the memory.
void sparse_attention(const float* key_unit, float strength, const float* mem, const int64_t* index,
                      int64_t k, int64_t d, const float* bias, float* weights) {
  float top = -INFINITY;
  for (int64_t j = 0; j < k; ++j) {
    const float* slot = mem + index[j] * d;
    const float norm = std::max(std::sqrt(dot(slot, slot, d)), 1e-12f);
    float logit = strength * dot(key_unit, slot, d) / norm;
    if (bias != nullptr) logit += bias[j];
    weights[j] = logit;
    top = std::max(top, logit);
  }
  float sum = 0.0f;
  for (int64_t j = 0; j < k; ++j) sum += (weights[j] = std::exp(weights[j] - top));
  for (int64_t j = 0; j < k; ++j) weights[j] /= sum;
}

}  // namespace

// SlotMemory's rollout step (transformer controller), without autograd.  x (1, B, input);
// the state's memory (B, N, D), age and usage (B, N), read (B, H, D), write_rate (B,),
// ctrl_k and ctrl_v (B, W, hidden), ctrl_valid (B, W); starts (1, B); plan: 26 tensors
// flattened into one, at ``offsets`` (memory/slot/rollout.py native_plan); the write
// (float64) and read (float32) tie-breaks; eps of the controller's two layer norms and of
// read_norm; sizes and settings.  Returns y
// (1, B, hidden), the new memory, age, usage, ctrl_k, ctrl_v, ctrl_valid, read,
// read_weights (B, H, kr), write_rate, read_slots and write_slots (B, N), and the step's
// read_index (B, H, kr), write_index (B, Hw, kw) and write_weights (B, Hw, kw).
std::vector<Tensor> slot_step_nograd(Tensor x, std::vector<Tensor> state, Tensor starts,
                                     Tensor plan, std::vector<int64_t> offsets, Tensor write_tie,
                                     Tensor read_tie, std::vector<double> eps,
                                     std::vector<int64_t> sizes, double age_scale,
                                     double usage_decay, bool reset_bank) {
  TORCH_CHECK(state.size() == 8 && offsets.size() == 26 && eps.size() == 3 && sizes.size() == 6,
              "slot_step_nograd: 8 state tensors, 26 plan offsets, 3 eps, 6 sizes");
  TORCH_CHECK(plan.scalar_type() == torch::kFloat && plan.is_contiguous() && plan.device().is_cpu(),
              "slot_step_nograd: the plan must be one contiguous float32 CPU tensor");
  x = x.reshape({-1, x.size(-1)}).contiguous();
  for (auto& t : state) t = t.contiguous();
  for (const Tensor& t : state)
    TORCH_CHECK(t.scalar_type() == torch::kFloat, "slot_step_nograd: the state must be float32");
  const Tensor &memory = state[0], &age_in = state[1], &usage_in = state[2], &read_in = state[3];
  const Tensor &rate_in = state[4], &ck = state[5], &cv = state[6], &cvalid = state[7];
  const int64_t h = sizes[0], hw = sizes[1], kr = sizes[2], kw = sizes[3], ctrl_heads = sizes[4];
  const int64_t bottleneck = sizes[5];
  const int64_t batch = x.size(0), in_x = x.size(1), n = memory.size(1), d = memory.size(2);
  const int64_t window = ck.size(1), hidden = ck.size(2), hd = hidden / ctrl_heads;
  const int64_t in_total = in_x + h * d;
  const float ud = static_cast<float>(usage_decay);
  const auto opts = x.options();
  const Tensor start_rows = starts.to(torch::kBool).contiguous();  // held: read by pointer
  const bool* start = start_rows.data_ptr<bool>();
  const float* p[26];  // the plan's tensors, flattened one after the other
  for (int i = 0; i < 26; ++i) p[i] = plan.data_ptr<float>() + offsets[i];
  const float* retention = p[21];

  // The bank at the start of the step (rows that start emptied where the bank resets):
  // directions of the stored memory, values decayed once, age + 1, usage decayed.
  Tensor mem_t = torch::empty_like(memory), age_t = torch::empty_like(age_in);
  Tensor usage_t = torch::empty_like(usage_in);
  float *mem = mem_t.data_ptr<float>(), *age = age_t.data_ptr<float>();
  float* usage = usage_t.data_ptr<float>();
  std::vector<float> unit_v(batch * n * d);
  float* unit = unit_v.data();
  const float *m_in = memory.data_ptr<float>(), *a_in = age_in.data_ptr<float>();
  const float* u_in = usage_in.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    const bool empty = reset_bank && start[b];
    for (int64_t s = 0; s < n; ++s) {
      const int64_t row = (b * n + s) * d;
      if (empty) {
        std::fill(unit + row, unit + row + d, 0.0f);
        std::fill(mem + row, mem + row + d, 0.0f);
      } else {
        normalize(m_in + row, unit + row, d);
        for (int64_t i = 0; i < d; ++i) mem[row + i] = m_in[row + i] * retention[s];
      }
      age[b * n + s] = (empty ? 0.0f : a_in[b * n + s]) + 1.0f;
      usage[b * n + s] = (empty ? 0.0f : u_in[b * n + s]) * ud;
    }
  }

  // The controller: u = [x, read_{t-1}] (the carry zeroed where a row starts), one causal
  // block over the window of keys and values.
  std::vector<float> u(batch * in_total), z(batch * hidden), normed(batch * hidden);
  const float *xp = x.data_ptr<float>(), *rp = read_in.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    std::copy(xp + b * in_x, xp + (b + 1) * in_x, u.data() + b * in_total);
    for (int64_t i = 0; i < h * d; ++i)
      u[b * in_total + in_x + i] = start[b] ? 0.0f : rp[b * h * d + i];
  }
  linear(u.data(), batch, in_total, p[0], in_total, p[1], hidden, z.data());
  layer_norm_rows(z.data(), normed.data(), batch, hidden, p[2], p[3], eps[0]);
  std::vector<float> qkv(batch * 3 * hidden);
  linear(normed.data(), batch, hidden, p[4], hidden, p[5], 3 * hidden, qkv.data());
  Tensor keys_t = torch::empty_like(ck), values_t = torch::empty_like(cv);
  Tensor valid_t = torch::empty_like(cvalid);
  float *keys = keys_t.data_ptr<float>(), *values = values_t.data_ptr<float>();
  float* valid = valid_t.data_ptr<float>();
  const float *ck_p = ck.data_ptr<float>(), *cv_p = cv.data_ptr<float>();
  const float* cvalid_p = cvalid.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    // The window shifted by one place (emptied where the row starts), the step last.
    const int64_t row = b * window * hidden, kept = (window - 1) * hidden;
    if (start[b]) {
      std::fill(keys + row, keys + row + kept, 0.0f);
      std::fill(values + row, values + row + kept, 0.0f);
    } else {
      std::copy(ck_p + row + hidden, ck_p + row + window * hidden, keys + row);
      std::copy(cv_p + row + hidden, cv_p + row + window * hidden, values + row);
    }
    for (int64_t w = 0; w + 1 < window; ++w)
      valid[b * window + w] = start[b] ? 0.0f : cvalid_p[b * window + w + 1];
    const int64_t last = (b * window + window - 1) * hidden;
    std::copy(qkv.data() + b * 3 * hidden + hidden, qkv.data() + b * 3 * hidden + 2 * hidden,
              keys + last);
    std::copy(qkv.data() + b * 3 * hidden + 2 * hidden, qkv.data() + (b + 1) * 3 * hidden,
              values + last);
    valid[b * window + window - 1] = 1.0f;
  }
  std::vector<float> mixed(batch * hidden, 0.0f), logits(window);
  const float root = std::sqrt(static_cast<float>(hd));  // logits / sqrt(hd), as in Python
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t head = 0; head < ctrl_heads; ++head) {
      const float* q = qkv.data() + b * 3 * hidden + head * hd;
      float top = -INFINITY;
      for (int64_t w = 0; w < window; ++w) {
        if (valid[b * window + w] < 0.5f) continue;
        logits[w] = dot(q, keys + (b * window + w) * hidden + head * hd, hd) / root +
                    p[8][head * window + w];
        top = std::max(top, logits[w]);
      }
      float total = 0.0f;
      for (int64_t w = 0; w < window; ++w)
        total += (logits[w] = valid[b * window + w] < 0.5f ? 0.0f : std::exp(logits[w] - top));
      float* m = mixed.data() + b * hidden + head * hd;
      for (int64_t w = 0; w < window; ++w) {
        if (logits[w] == 0.0f) continue;
        const float weight = logits[w] / total;
        const float* v = values + (b * window + w) * hidden + head * hd;
        for (int64_t i = 0; i < hd; ++i) m[i] += weight * v[i];
      }
    }
  std::vector<float> sub(batch * hidden);  // a sublayer's output, added to its input
  linear(mixed.data(), batch, hidden, p[6], hidden, p[7], hidden, sub.data());
  for (int64_t i = 0; i < batch * hidden; ++i) z[i] += sub[i];
  layer_norm_rows(z.data(), normed.data(), batch, hidden, p[9], p[10], eps[1]);
  std::vector<float> wide(batch * 2 * hidden), hid(batch * hidden);
  linear(normed.data(), batch, hidden, p[11], hidden, p[12], 2 * hidden, wide.data());
  gelu_(wide.data(), batch * 2 * hidden);
  linear(wide.data(), batch, 2 * hidden, p[13], 2 * hidden, p[14], hidden, sub.data());
  for (int64_t i = 0; i < batch * hidden; ++i) hid[i] = z[i] + sub[i];  // h = z + mlp(LN(z))

  // The heads: read keys, read strengths, write keys, write strengths, write gates,
  // allocation strengths, erase factors; the bottleneck's add.
  const int64_t width = h * d + h + hw * d + 3 * hw + hw * d;
  std::vector<float> heads(batch * width), small(batch * bottleneck), add(batch * hw * d);
  linear(hid.data(), batch, hidden, p[15], hidden, p[16], width, heads.data());
  linear(hid.data(), batch, hidden, p[17], hidden, p[18], bottleneck, small.data());
  gelu_(small.data(), static_cast<int64_t>(small.size()));
  linear(small.data(), batch, bottleneck, p[19], bottleneck, p[20], hw * d, add.data());
  const int64_t o_rs = h * d, o_wk = o_rs + h, o_ws = o_wk + hw * d, o_gate = o_ws + hw;
  const int64_t o_alloc = o_gate + hw, o_erase = o_alloc + hw;
  const int64_t heads_all = hw + h;

  // Unit keys (write heads first, then read heads) and their cosine with every slot.
  std::vector<float> keys_unit(batch * heads_all * d), similarity(batch * n * heads_all);
  for (int64_t b = 0; b < batch; ++b) {
    const float* row = heads.data() + b * width;
    for (int64_t j = 0; j < heads_all; ++j) {
      const float* key = j < hw ? row + o_wk + j * d : row + (j - hw) * d;
      normalize(key, keys_unit.data() + (b * heads_all + j) * d, d);
    }
    // (N, heads): each slot's direction against each key (five dot products of 64 a slot
    // in loops cost less than a BLAS call per row at these sizes).
    for (int64_t s = 0; s < n; ++s)
      for (int64_t j = 0; j < heads_all; ++j)
        similarity[(b * n + s) * heads_all + j] =
            dot(unit + (b * n + s) * d, keys_unit.data() + (b * heads_all + j) * d, d);
  }

  Tensor write_index_t = torch::empty({batch, hw, kw}, opts.dtype(torch::kLong));
  Tensor write_weights_t = torch::empty({batch, hw, kw}, opts);
  Tensor read_index_t = torch::empty({batch, h, kr}, opts.dtype(torch::kLong));
  Tensor read_weights_t = torch::empty({batch, h, kr}, opts);
  Tensor read_t = torch::empty({batch, h, d}, opts);
  Tensor rate_t = torch::empty_like(rate_in);
  Tensor read_slots_t = torch::zeros({batch, n}, opts), write_slots_t = torch::zeros({batch, n}, opts);
  int64_t *w_index = write_index_t.data_ptr<int64_t>(), *r_index = read_index_t.data_ptr<int64_t>();
  float *w_weights = write_weights_t.data_ptr<float>(), *r_weights = read_weights_t.data_ptr<float>();
  float *read = read_t.data_ptr<float>(), *rate = rate_t.data_ptr<float>();
  float *read_slots = read_slots_t.data_ptr<float>(), *write_slots = write_slots_t.data_ptr<float>();
  const double* w_tie = write_tie.data_ptr<double>();
  const float* r_tie = read_tie.data_ptr<float>();
  const float* rate_p = rate_in.data_ptr<float>();
  std::vector<double> w_score(n);
  std::vector<float> r_score(n), staleness(n), bias(kw), erase(d);
  for (int64_t b = 0; b < batch; ++b) {
    const float* row = heads.data() + b * width;
    const float* sim = similarity.data() + b * n * heads_all;
    float* mem_b = mem + b * n * d;
    float* unit_b = unit + b * n * d;
    float *age_b = age + b * n, *usage_b = usage + b * n;
    for (int64_t s = 0; s < n; ++s)
      staleness[s] = age_b[s] / (age_b[s] + static_cast<float>(age_scale)) - usage_b[s];
    // The writes, head after head, each on the slots the bank at the step's start scores best.
    float gate_sum = 0.0f;
    for (int64_t j = 0; j < hw; ++j) {
      const float strength = 1.0f + softplus(row[o_ws + j]), gate = sigmoid(row[o_gate + j]);
      const float alloc = softplus(row[o_alloc + j]);
      gate_sum += gate;
      for (int64_t s = 0; s < n; ++s) {
        const float score = strength * sim[s * heads_all + j] + alloc * staleness[s];
        w_score[s] = static_cast<double>(score) + w_tie[s];
      }
      int64_t* index = w_index + (b * hw + j) * kw;
      top_k(w_score.data(), n, kw, index);
      for (int64_t i = 0; i < kw; ++i) bias[i] = alloc * staleness[index[i]];
      float* weights = w_weights + (b * hw + j) * kw;
      sparse_attention(keys_unit.data() + (b * heads_all + j) * d, strength, mem_b, index, kw, d,
                       bias.data(), weights);
      const float* add_j = add.data() + (b * hw + j) * d;
      for (int64_t c = 0; c < d; ++c) erase[c] = sigmoid(row[o_erase + j * d + c]);
      for (int64_t i = 0; i < kw; ++i) {
        const float g = gate * weights[i];
        float* slot = mem_b + index[i] * d;
        for (int64_t c = 0; c < d; ++c) slot[c] = slot[c] * (1.0f - g * erase[c]) + g * add_j[c];
        normalize(slot, unit_b + index[i] * d, d);
        age_b[index[i]] *= 1.0f - g;
        usage_b[index[i]] += (1.0f - ud) * g;
        write_slots[b * n + index[i]] += g;
      }
    }
    rate[b] = ud * (start[b] ? 0.0f : rate_p[b]) + (1.0f - ud) * (gate_sum / hw);
    // The reads: each head's scores against the bank at the step's start, patched for the
    // slots just written, then the top kr and their softmax.
    for (int64_t j = 0; j < h; ++j) {
      const float* key_unit = keys_unit.data() + (b * heads_all + hw + j) * d;
      for (int64_t s = 0; s < n; ++s) r_score[s] = sim[s * heads_all + hw + j];
      for (int64_t i = 0; i < hw * kw; ++i) {
        const int64_t slot = w_index[b * hw * kw + i];
        r_score[slot] = dot(key_unit, unit_b + slot * d, d);
      }
      for (int64_t s = 0; s < n; ++s) r_score[s] += r_tie[s];
      int64_t* index = r_index + (b * h + j) * kr;
      top_k(r_score.data(), n, kr, index);
      float* weights = r_weights + (b * h + j) * kr;
      sparse_attention(key_unit, 1.0f + softplus(row[o_rs + j]), mem_b, index, kr, d, nullptr,
                       weights);
      float* out = read + (b * h + j) * d;
      std::fill(out, out + d, 0.0f);
      for (int64_t i = 0; i < kr; ++i)
        for (int64_t c = 0; c < d; ++c) out[c] += weights[i] * mem_b[index[i] * d + c];
    }
    for (int64_t j = 0; j < h; ++j)
      for (int64_t i = 0; i < kr; ++i) {
        const int64_t slot = r_index[(b * h + j) * kr + i];
        const float weight = r_weights[(b * h + j) * kr + i];
        usage_b[slot] += (1.0f - ud) * weight;
        read_slots[b * n + slot] += weight / h;
      }
  }

  // y = h + fuse(LayerNorm(read)).
  std::vector<float> read_normed(batch * h * d);
  layer_norm_rows(read, read_normed.data(), batch * h, d, p[22], p[23], eps[2]);
  Tensor y_t = torch::empty({1, batch, hidden}, opts);
  float* y = y_t.data_ptr<float>();
  linear(read_normed.data(), batch, h * d, p[24], h * d, p[25], hidden, sub.data());
  for (int64_t i = 0; i < batch * hidden; ++i) y[i] = hid[i] + sub[i];
  return {y_t,         mem_t,          age_t,        usage_t,       keys_t,
          values_t,    valid_t,        read_t,       read_weights_t, rate_t,
          read_slots_t, write_slots_t, read_index_t, write_index_t, write_weights_t};
}

}  // namespace memworld
