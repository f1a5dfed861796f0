// BitMemory's rollout step without autograd in C++ (memory/bit/rollout.py rollout_forward,
// evaluation mode: the hard read): the codec's, the read head's and the fusion's products
// through the BLAS torch carries (blas.cpp), the controller through ATen's gru_cell (the
// call nn.GRUCell makes), and the store's work as plain loops: packing the written word,
// the copy of the words and flags with the write, the argmax addresses, unpacking the range
// read.  Part of the rollout_steps extension (rollout_steps.cpp binds it).
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "blas.h"
#include "rows.h"

namespace memworld {

namespace {

// Two layers with a GELU between them (the codec's encoder or decoder) on ``rows`` rows:
// out (rows, n_out) = W1 gelu(W0 in + b0) + b1.
void two_layers(const float* in, int64_t rows, int64_t n_in, const float* w0, const float* b0,
                int64_t n_hidden, const float* w1, const float* b1, int64_t n_out, float* out) {
  std::vector<float> hidden(rows * n_hidden);
  linear(in, rows, n_in, w0, n_in, b0, n_hidden, hidden.data());
  gelu_(hidden.data(), rows * n_hidden);
  linear(hidden.data(), rows, n_hidden, w1, n_hidden, b1, n_out, out);
}

// The first index of the largest of n values (torch.argmax's).
int64_t argmax(const float* v, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

// Entropy (nats) of softmax(v) over n values, as logits_entropy: -sum p log p.
float entropy(const float* v, int64_t n) {
  const float top = v[argmax(v, n)];
  std::vector<float> e(n);
  float total = 0.0f;
  for (int64_t i = 0; i < n; ++i) total += (e[i] = std::exp(v[i] - top));
  const float log_total = std::log(total);
  float h = 0.0f;
  for (int64_t i = 0; i < n; ++i) h -= e[i] / total * (v[i] - top - log_total);
  return h;
}

}  // namespace

// BitMemory's rollout step in evaluation mode, without autograd.  x (1, B, input); the
// state's words (B, N) int32, written (B, N) bool, pointer (B,) long, h (B, hidden) and
// read (B, range_len (input + 1)); starts (1, B); plan: 18 tensors flattened into one, at
// ``offsets`` (memory/bit/rollout.py native_plan); sizes: codec hidden, word bits, address
// half size, range length, learned writes (0/1), relative reads (0/1).  Returns y
// (1, B, hidden), words, written, pointer, h, read, read_entropy, write_address,
// read_address and the reconstruction error of the codec on x (a 0-dim tensor).
std::vector<Tensor> bit_step_nograd(Tensor x, std::vector<Tensor> state, Tensor starts,
                                    Tensor plan, std::vector<int64_t> offsets,
                                    std::vector<int64_t> sizes) {
  TORCH_CHECK(state.size() == 5 && offsets.size() == 18 && sizes.size() == 6,
              "bit_step_nograd: 5 state tensors, 18 plan offsets, 6 sizes");
  TORCH_CHECK(plan.scalar_type() == torch::kFloat && plan.is_contiguous() && plan.device().is_cpu(),
              "bit_step_nograd: the plan must be one contiguous float32 CPU tensor");
  x = x.reshape({-1, x.size(-1)}).contiguous();
  for (auto& t : state) t = t.contiguous();
  const Tensor &words_in = state[0], &written_in = state[1], &pointer_in = state[2];
  const Tensor &h_in = state[3], &read_in = state[4];
  TORCH_CHECK(words_in.scalar_type() == torch::kInt && written_in.scalar_type() == torch::kBool &&
                  pointer_in.scalar_type() == torch::kLong &&
                  h_in.scalar_type() == torch::kFloat && read_in.scalar_type() == torch::kFloat,
              "bit_step_nograd: words int32, written bool, pointer int64, h and read float32");
  const int64_t codec = sizes[0], word_bits = sizes[1], half = sizes[2], range = sizes[3];
  const bool learned = sizes[4] != 0, relative = sizes[5] != 0;
  const int64_t batch = x.size(0), in = x.size(1), n = words_in.size(1);
  const int64_t hidden = h_in.size(1), read_dim = read_in.size(1), cell_in = in + read_dim;
  const float* p[18];  // the plan's tensors, flattened one after the other
  for (int i = 0; i < 18; ++i) p[i] = plan.data_ptr<float>() + offsets[i];
  const Tensor start_rows = starts.to(torch::kBool).contiguous();  // held: read by pointer
  const bool* start = start_rows.data_ptr<bool>();
  const auto opts = x.options();
  const float* xp = x.data_ptr<float>();

  // The codec: the input's bits (logits > 0) and the decoder's error on them.
  std::vector<float> logits(batch * word_bits), signs(batch * word_bits), decoded(batch * in);
  two_layers(xp, batch, in, p[0], p[1], codec, p[2], p[3], word_bits, logits.data());
  for (int64_t i = 0; i < batch * word_bits; ++i) signs[i] = logits[i] > 0.0f ? 1.0f : -1.0f;
  two_layers(signs.data(), batch, word_bits, p[4], p[5], codec, p[6], p[7], in, decoded.data());
  double error = 0.0;
  for (int64_t i = 0; i < batch * in; ++i)
    error += static_cast<double>(decoded[i] - xp[i]) * (decoded[i] - xp[i]);
  Tensor recon = torch::full({}, static_cast<float>(error / (batch * in)), opts);

  // The controller on [x, read] (zeroed where a row starts), through nn.GRUCell's call.
  Tensor cell_x = torch::empty({batch, cell_in}, opts), h0 = torch::empty({batch, hidden}, opts);
  float *cx = cell_x.data_ptr<float>(), *h0p = h0.data_ptr<float>();
  const float *rp = read_in.data_ptr<float>(), *hp = h_in.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    std::copy(xp + b * in, xp + (b + 1) * in, cx + b * cell_in);
    for (int64_t i = 0; i < read_dim; ++i) cx[b * cell_in + in + i] = start[b] ? 0.0f : rp[b * read_dim + i];
    for (int64_t i = 0; i < hidden; ++i) h0p[b * hidden + i] = start[b] ? 0.0f : hp[b * hidden + i];
  }
  const auto view = [&](int i, std::vector<int64_t> shape) {
    return torch::from_blob(const_cast<float*>(p[i]), shape, opts);
  };
  Tensor h = torch::gru_cell(cell_x, h0, view(8, {3 * hidden, cell_in}),
                             view(9, {3 * hidden, hidden}), view(10, {3 * hidden}),
                             view(11, {3 * hidden}));
  const float* hq = h.data_ptr<float>();
  std::vector<float> halves(batch * 2 * half), write_halves;
  linear(hq, batch, hidden, p[12], hidden, p[13], 2 * half, halves.data());
  if (learned) {
    write_halves.resize(batch * 2 * half);
    linear(hq, batch, hidden, p[16], hidden, p[17], 2 * half, write_halves.data());
  }

  // The store: the state's words and flags (emptied where a row starts) with the write.
  Tensor words_t = torch::empty_like(words_in), written_t = torch::empty_like(written_in);
  Tensor pointer_t = torch::empty_like(pointer_in), write_address_t = torch::empty_like(pointer_in);
  Tensor read_address_t = torch::empty_like(pointer_in);
  Tensor read_t = torch::empty({batch, read_dim}, opts), entropy_t = torch::empty({batch}, opts);
  int32_t* words = words_t.data_ptr<int32_t>();
  bool* written = written_t.data_ptr<bool>();
  const int32_t* w_in = words_in.data_ptr<int32_t>();
  const bool* f_in = written_in.data_ptr<bool>();
  const int64_t* ptr_in = pointer_in.data_ptr<int64_t>();
  int64_t *ptr = pointer_t.data_ptr<int64_t>(), *w_addr = write_address_t.data_ptr<int64_t>();
  int64_t* r_addr = read_address_t.data_ptr<int64_t>();
  float *read = read_t.data_ptr<float>(), *ent = entropy_t.data_ptr<float>();
  std::vector<float> range_bits(batch * range * word_bits);
  for (int64_t b = 0; b < batch; ++b) {
    if (start[b]) {
      std::fill(words + b * n, words + (b + 1) * n, 0);
      std::fill(written + b * n, written + (b + 1) * n, false);
    } else {
      std::copy(w_in + b * n, w_in + (b + 1) * n, words + b * n);
      std::copy(f_in + b * n, f_in + (b + 1) * n, written + b * n);
    }
    const int64_t pointer = start[b] ? 0 : ptr_in[b];
    int64_t address = pointer;
    if (learned) {
      const float* wh = write_halves.data() + b * 2 * half;
      address = argmax(wh, half) * half + argmax(wh + half, half);
    }
    uint32_t packed = 0;  // bit j has weight 2^j; bit 31 becomes the int32 sign bit
    for (int64_t j = 0; j < word_bits; ++j)
      if (logits[b * word_bits + j] > 0.0f) packed |= uint32_t{1} << j;
    const int64_t slot = ((address % n) + n) % n;
    words[b * n + slot] = static_cast<int32_t>(packed);
    written[b * n + slot] = true;
    w_addr[b] = address;
    ptr[b] = (pointer + 1) % n;
    // The read: the hard address of the read logits (back from the write where relative).
    const float* hh = halves.data() + b * 2 * half;
    int64_t target = argmax(hh, half) * half + argmax(hh + half, half);
    if (relative) target = ((address - target) % n + n) % n;
    r_addr[b] = target;
    ent[b] = entropy(hh, half) + entropy(hh + half, half);
    for (int64_t l = 0; l < range; ++l) {
      const int64_t at = (target + l) % n;
      const uint32_t word = static_cast<uint32_t>(words[b * n + at]);
      float* bits = range_bits.data() + (b * range + l) * word_bits;
      for (int64_t j = 0; j < word_bits; ++j) bits[j] = (word >> j) & 1u ? 1.0f : -1.0f;
      read[(b * range + l) * (in + 1) + in] = written[b * n + at] ? 1.0f : 0.0f;
    }
  }
  // Decode the range's words (bits as -1/+1) into the read, beside their written flags.
  std::vector<float> range_decoded(batch * range * in);
  two_layers(range_bits.data(), batch * range, word_bits, p[4], p[5], codec, p[6], p[7], in,
             range_decoded.data());
  for (int64_t r = 0; r < batch * range; ++r)
    std::copy(range_decoded.data() + r * in, range_decoded.data() + (r + 1) * in,
              read + r * (in + 1));
  // y = h + fuse(read).
  Tensor y_t = torch::empty({1, batch, hidden}, opts);
  float* y = y_t.data_ptr<float>();
  std::vector<float> fused(batch * hidden);
  linear(read, batch, read_dim, p[14], read_dim, p[15], hidden, fused.data());
  for (int64_t i = 0; i < batch * hidden; ++i) y[i] = hq[i] + fused[i];
  return {y_t,    words_t,   written_t,       pointer_t,      h,
          read_t, entropy_t, write_address_t, read_address_t, recon};
}

}  // namespace memworld
