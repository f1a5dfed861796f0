"""The sequence replay buffer: windows never mix episodes without a reset, stored states are
the rollout's, and replaying a window from its stored state reproduces the rollout's outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from memworld import memory
from memworld.agents.off_policy.sequence_buffer import SequenceReplayBuffer

OBS = spaces.Box(-1.0, 1.0, (3,), np.float32)


def fill_streams(buffer: SequenceReplayBuffer, rows: int, seed: int = 0):
    """Write ``rows`` rows per env: episodes of random length, each closed by a terminal row.

    The memory steps on every row (as a replay will); the episode id goes in the reward
    column so a test can see which episode each sampled row belongs to.  Returns the
    recorded states before each row and the memory's output at each row, per env.
    """
    rng = np.random.default_rng(seed)
    n = buffer.n_envs
    th.manual_seed(seed)
    mem = memory.make("gru", input_dim=3, hidden_dim=8)
    state = mem.initial_state(n)
    starts = np.ones(n, dtype=bool)
    left = rng.integers(1, 9, size=n)  # steps left in each env's episode
    terminal_next = np.zeros(n, dtype=bool)
    episode = np.arange(n, dtype=np.float32)
    states, outputs = [], []
    for _ in range(rows):
        obs = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
        with th.no_grad():
            out, new_state = mem(th.as_tensor(obs)[None], state, th.as_tensor(starts)[None])
        states.append({k: v.clone() for k, v in state.items()})
        outputs.append(out[0].clone())
        terminated = rng.random(n) < 0.5
        buffer.add(
            obs,
            np.zeros((n, 1)),
            np.zeros((n, 1)),
            episode,
            starts,
            terminal_next,
            terminal_next & terminated,
            state,
        )
        state = new_state
        # a terminal row is followed by a new episode; a step row by a step or the terminal row
        new_starts = terminal_next.copy()
        episode = np.where(new_starts, episode + n, episode)
        left = np.where(terminal_next, rng.integers(1, 9, size=n), left - 1)
        terminal_next = ~terminal_next & (left == 0)
        starts = new_starts
    return mem, states, outputs


def make_buffer(**kw) -> SequenceReplayBuffer:
    size = kw.pop("buffer_size", 90)
    args = dict(n_envs=3, seq_len=6, burn_in=3, lookahead=2, state_stride=3, seed=1)
    args.update(kw)
    return SequenceReplayBuffer(size, OBS, spaces.Discrete(2), **args)


@pytest.mark.parametrize("rows", [20, 100])  # 100: the streams have wrapped around (30 per env)
def test_windows_reset_at_every_new_episode_and_replay_the_rollout_exactly(rows):
    buffer = make_buffer()
    mem, states, outputs = fill_streams(buffer, rows)
    data = buffer.sample(64)
    assert data.observations.shape == (buffer.window, 64, 3)
    episode = data.rewards
    changed = episode[1:] != episode[:-1]
    assert bool(changed.any()), "the test should sample windows that cross episodes"
    # a new episode inside a window always comes with a reset of the memory there
    assert bool((~changed | data.episode_starts[1:]).all())
    # and only after that episode's terminal row
    assert bool((~changed | data.is_terminal[:-1]).all())
    oldest = max(0, rows - buffer.capacity)
    assert (data.start_rows >= oldest).all() and (data.start_rows + buffer.window <= rows).all()
    assert (data.start_rows % buffer.state_stride == 0).all()
    for j, (env, start) in enumerate(zip(data.env_indices, data.start_rows)):
        for key, value in data.states.items():  # the stored state is the rollout's, exactly
            assert th.equal(value[j], states[start][key][env])
    with th.no_grad():
        replay, _ = mem(data.observations, data.states, data.episode_starts)
    rollout = th.stack(
        [
            th.stack([outputs[s + t][env] for env, s in zip(data.env_indices, data.start_rows)])
            for t in range(buffer.window)
        ]
    )
    th.testing.assert_close(replay, rollout, rtol=0, atol=1e-6)


def test_zero_start_keeps_no_state_and_terminal_rows_carry_no_loss():
    buffer = make_buffer(store_states=False)
    fill_streams(buffer, 40)
    assert buffer.states == {}
    data = buffer.sample(32)
    assert data.states is None
    mask = buffer.loss_mask(data)
    assert mask.shape == (buffer.seq_len, 32)
    assert th.equal(mask, ~data.is_terminal[buffer.burn_in : buffer.burn_in + buffer.seq_len])
    assert bool((~mask).any())


def test_prioritized_sampling_follows_the_priorities():
    buffer = make_buffer(prioritized=True, alpha=1.0, beta=1.0, eta=0.5)
    fill_streams(buffer, 30)
    envs, starts = buffer.candidates()
    td = th.zeros(buffer.seq_len, 1)
    td[0, 0], td[1, 0] = 4.0, 2.0  # max 4, mean 1 over 6 rows -> 0.5 * 4 + 0.5 * 1 = 2.5
    buffer.update_priorities(envs[:1], starts[:1], td, th.ones(buffer.seq_len, 1, dtype=th.bool))
    slot = (starts[0] // buffer.state_stride) % buffer.n_slots
    assert buffer.priorities[slot, envs[0]] == pytest.approx(2.5 + 1e-6)
    for other in range(1, envs.size):
        buffer.update_priorities(
            envs[other : other + 1],
            starts[other : other + 1],
            th.zeros(buffer.seq_len, 1),
            th.ones(buffer.seq_len, 1, dtype=th.bool),
        )
    data = buffer.sample(50)
    assert (data.env_indices == envs[0]).all() and (data.start_rows == starts[0]).all()
    th.testing.assert_close(data.weights, th.ones(50))


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="buffer_size"):
        make_buffer(buffer_size=10)
    with pytest.raises(ValueError, match="burn_in"):
        make_buffer(burn_in=-1)
    buffer = make_buffer()
    with pytest.raises(ValueError, match="learning_starts"):
        buffer.sample(4)
