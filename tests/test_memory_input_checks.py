"""Bad input to the memory modules and stores gets a clear error naming the argument.

Each case is one that used to be accepted and lose, glue or clip data, or fail
deep inside torch; the error must name the argument (and, where there is one,
the allowed range and the fix).
"""

from __future__ import annotations

import pytest
import torch

from memworld import memory
from memworld.memory.bit.store import BitStore
from memworld.memory.dual.ltm import LongTermMemory
from memworld.memory.persistent import PersistentStore, StoreConfig

INPUT_DIM = 5
SMALL = {
    "lstm": {"hidden_dim": 8},
    "gru": {"hidden_dim": 8},
    "window_attention": {"window": 4, "d_model": 8, "num_heads": 2},
    "slot": {"num_slots": 8, "slot_dim": 8, "hidden_dim": 16, "controller_window": 4},
    "dual": {"ltm_capacity": 8, "hidden_dim": 16, "key_dim": 8, "stm_slots": 4},
    "bit": {"addr_bits_per_half": 3, "range_len": 2, "hidden_dim": 8},
}
NAMES = memory.names()


def build(name: str) -> memory.MemoryModule:
    torch.manual_seed(0)
    return memory.make(name, INPUT_DIM, **SMALL.get(name, {}))


def call(module, x, state=None, starts=None):
    state = module.initial_state(x.shape[1]) if state is None else state
    starts = torch.zeros(x.shape[:2], dtype=torch.bool) if starts is None else starts
    return module(x, state, starts)


# ------------------------------------------------------------------ LongTermMemory
def test_long_term_memory_refuses_keys_and_values_of_the_wrong_width():
    ltm = LongTermMemory(key_dim=8, value_dim=6, capacity=16)
    with pytest.raises(ValueError, match=r"key must have shape \(N, key_dim=8\).*got \(4, 4\)"):
        ltm.store_experience(torch.randn(4, 4), torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"value must have shape \(N, value_dim=6\).*\(4, 3\)"):
        ltm.store_experience(torch.randn(4, 8), torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"query must have shape \(N, key_dim=8\).*\(16,\)"):
        ltm.query(torch.randn(16))
    with pytest.raises(ValueError, match="query must have shape"):
        ltm.query(torch.randn(2, 2, 8))
    with pytest.raises(ValueError, match="3 keys but 2 values"):
        ltm.store_experience(torch.randn(3, 8), torch.randn(2, 6))
    assert len(ltm) == 0  # nothing was stored by the refused calls
    assert ltm.store_experience(torch.randn(8), torch.randn(6)).tolist() == [0]
    assert ltm.query(torch.randn(3, 8)).read.shape == (3, 6)


def test_dual_memory_experience_store_checks_shapes():
    module = build("dual")
    with pytest.raises(ValueError, match="key must have shape"):
        module.store_experience(torch.randn(4, 4), torch.randn(4, 16))
    with pytest.raises(ValueError, match="query must have shape"):
        module.query(torch.randn(16))


# ------------------------------------------------------------------------ BitStore
@pytest.fixture
def store() -> BitStore:
    return BitStore(vector_dim=5, addr_bits_per_half=2, range_len=3)  # 16 words


def test_bit_store_refuses_addresses_outside_memory_unless_wrap(store):
    state, bits = store.initial_state(1), torch.ones(1, 32)
    for bad in (20, -1):
        with pytest.raises(ValueError, match=rf"address must be in \[0, 15\].*got {bad}"):
            store.write(state, torch.tensor([bad]), bits)
        with pytest.raises(ValueError, match="address must be in"):
            store.read(state, torch.tensor([bad]))
    with pytest.raises(ValueError, match="address must be an integer tensor.*float32"):
        store.write(state, torch.tensor([3.7]), bits)
    assert not state["written"].any()
    wrapped = store.write(state, torch.tensor([20]), bits, wrap=True)  # explicit ring: word 4
    assert wrapped["written"][0].nonzero().flatten().tolist() == [4]


def test_bit_store_ranges_crossing_the_end_wrap_as_a_ring(store):
    state = store.write(store.initial_state(1), torch.tensor([15]), torch.ones(1, 2, 32))
    assert state["written"][0].nonzero().flatten().tolist() == [0, 15]
    assert store.read(state, torch.tensor([15]), range_len=2).sum() == 64


def test_bit_store_refuses_writes_longer_than_memory_and_bad_lengths(store):
    state = store.initial_state(1)
    with pytest.raises(ValueError, match=r"number of words written .*\[1, 16\], got 20"):
        store.write_words(state, torch.tensor([0]), torch.ones(1, 20, dtype=torch.int32))
    for bad in (0, -2, 40, 2.5):
        with pytest.raises(ValueError, match=r"range_len must be an integer in \[1, 16\]"):
            store.read(state, torch.tensor([0]), range_len=bad)
    logits = torch.randn(1, 4)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 4\], got 0"):
        store.candidates(logits, logits, k=0)


# ----------------------------------------------------------------- PersistentStore
def test_persistent_store_and_config_refuse_bad_sizes():
    with pytest.raises(ValueError, match=r"value_dim must be an integer in \[1, inf\), got 0"):
        PersistentStore(dim=4, value_dim=0)
    with pytest.raises(ValueError, match=r"^dim must be an integer in \[1, inf\), got 0"):
        PersistentStore(dim=0)
    assert PersistentStore(dim=3).value_dim == 3  # None: same as dim
    for bad in (0, -5, 3.5):
        with pytest.raises(ValueError, match=r"StoreConfig.ivf_nlist must be an integer in \[1,"):
            StoreConfig(ivf_nlist=bad)
    for bad in (0, -1):
        with pytest.raises(ValueError, match=r"StoreConfig.lmdb_map_size must be an integer"):
            StoreConfig(lmdb_map_size=bad)


def test_persistent_store_refuses_negative_as_of():
    store = PersistentStore(dim=2)
    store.put([1.0, 0.0], [1.0, 1.0])
    store.put([1.0, 0.1], [2.0, 2.0])
    assert [line.n for line in store.query([1.0, 0.0], as_of=1)] == [0]
    with pytest.raises(ValueError, match=r"as_of must be an integer in \[0, inf\), got -5"):
        store.query([1.0, 0.0], as_of=-5)
    with pytest.raises(ValueError, match="as_of"):
        store.bias_vector([1.0, 0.0], as_of=-1)


# ------------------------------------------------------- MemoryModule.check_inputs
@pytest.mark.parametrize("name", NAMES)
def test_integer_x_and_empty_chunks_are_refused(name):
    module = build(name)
    x = torch.randn(2, 3, INPUT_DIM)
    with pytest.raises(ValueError, match=r"x must have .*got torch.int64; pass x.float\(\)"):
        call(module, x.long())
    with pytest.raises(ValueError, match=r"x must have shape .*at least one step.*\(0, 3, 5\)"):
        call(module, x[:0])


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("framestack", "persistent")])
def test_x_of_another_dtype_than_the_parameters_is_refused(name):
    with pytest.raises(ValueError, match=r"x must have dtype torch.float32 .*module.double\(\)"):
        call(build(name), torch.randn(2, 3, INPUT_DIM, dtype=torch.float64))


@pytest.mark.parametrize("name", NAMES)
def test_episode_starts_must_be_zero_or_one(name):
    module, x = build(name), torch.randn(2, 3, INPUT_DIM)
    for bad in (0.5, 2.0):
        with pytest.raises(ValueError, match=rf"episode_starts must hold only 0/1.*{bad}"):
            call(module, x, starts=torch.full((2, 3), bad))
    call(module, x, starts=torch.ones(2, 3))  # 0/1 floats are fine


@pytest.mark.parametrize("name", NAMES)
def test_state_for_another_batch_or_missing_a_key_is_refused(name):
    module, x = build(name), torch.randn(2, 3, INPUT_DIM)
    state = module.initial_state(4)
    key = next(iter(state))
    with pytest.raises(
        ValueError, match=rf"state\['{key}'\] has batch size 4 .*initial_state\(3\)"
    ):
        call(module, x, state=state)
    state = module.initial_state(3)
    del state[key]
    with pytest.raises(ValueError, match=rf"state is missing \['{key}'\].*initial_state"):
        call(module, x, state=state)


# -------------------------------------------------------------------- constructors
@pytest.mark.parametrize(
    ("name", "kwargs", "argument"),
    [
        ("dual", {"key_dim": -4}, "key_dim"),
        ("dual", {"attention_window": 2.5}, "attention_window"),
        ("dual", {"attention_window": -3}, "attention_window"),
        ("dual", {"ltm_write_threshold": 2.0}, r"ltm_write_threshold must be a number in \[0, 1\]"),
        ("dual", {"ltm_write_threshold": -1}, "ltm_write_threshold"),
        ("slot", {"util_eps": 0}, r"util_eps must be a number in \(0, inf\)"),
        ("slot", {"util_eps": -1}, "util_eps"),
        ("slot", {"util_weight": -1}, r"util_weight must be a number in \[0, inf\)"),
        ("slot", {"pressure_weight": -1}, "pressure_weight"),
        ("slot", {"read_entropy_weight": -1}, "read_entropy_weight"),
        ("slot", {"live_threshold": -1}, "live_threshold"),
        ("slot", {"decay_init": "0.9"}, r"decay_init must be a number in \(0, 1\)"),
        ("slot", {"controller_window": -3, "controller": "gru"}, "controller_window"),
        ("bit", {"recon_weight": -1}, r"recon_weight must be a number in \[0, inf\)"),
    ],
)
def test_constructor_refuses_out_of_range_arguments(name, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        memory.make(name, INPUT_DIM, **{**SMALL.get(name, {}), **kwargs})
