"""Hand-checked cases for the recall tasks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from memworld import envs  # noqa: F401
from memworld.envs.tasks.count_recall import _memoryless_best
from tests.env_helpers import episode_returns, make_vec


def test_count_recall_chance_by_hand():
    # k=2, L=1: the count is 1[value == query], visible now -> a memoryless policy is perfect.
    assert _memoryless_best(2, 1) == pytest.approx(1.0)
    # k=2, L=2: no match -> counts 0 (t=0) and 0/1 (t=1, p=1/2): best answer 0 right 3/4;
    # match -> shifted by one: best answer 1 right 3/4.
    assert _memoryless_best(2, 2) == pytest.approx(0.75)


def test_count_recall_counts_from_observations():
    env = gym.make("memworld/CountRecall-v0", num_values=3, episode_length=12).unwrapped
    obs, _ = env.reset(seed=4)
    seen = np.zeros(3, dtype=int)
    total = 0.0
    for t in range(12):
        value, query = int(obs[:3].argmax()), int(obs[3:].argmax())
        seen[value] += 1
        assert env.oracle_action() == seen[query]
        wrong = (seen[query] + 1) if t % 2 else seen[query]
        obs, reward, terminated, _, _ = env.step(wrong)
        total += reward
        assert reward == pytest.approx((1 if t % 2 == 0 else -1) / 12)
    assert terminated and total == pytest.approx(0.0)


def test_repeat_first_answer_is_the_first_symbol():
    env = gym.make("memworld/RepeatFirst-v0", num_symbols=5, episode_length=6).unwrapped
    obs, _ = env.reset(seed=0)
    first = int(obs.argmax())
    for _ in range(6):
        assert env.oracle_action() == first
        obs, reward, terminated, _, _ = env.step(first)
        assert reward == pytest.approx(1 / 6)
    assert terminated


def test_autoencode_plays_back_in_reverse():
    env = gym.make("memworld/Autoencode-v0", num_symbols=4, length=5).unwrapped
    obs, _ = env.reset(seed=2)
    watched = []
    for _ in range(5):
        assert obs[-1] == 0.0
        watched.append(int(obs[:4].argmax()))
        obs, reward, *_ = env.step(0)
        assert reward == 0.0
    for j in range(5):
        assert obs[-1] == 1.0 and obs[:4].sum() == 0.0
        obs, reward, terminated, *_ = env.step(watched[-1 - j])
        assert reward == pytest.approx(1 / 5)
    assert terminated


def test_memory_length_context_queried_at_the_end():
    env = gym.make("memworld/MemoryLength-v0", memory_length=7).unwrapped
    obs, _ = env.reset(seed=1)
    answer = int(obs[0] > 0)
    for t in range(8):
        assert obs[1] == 0.0 and obs[2] == pytest.approx(1 - t / 8)  # time remaining
        if t > 0:
            assert abs(obs[0]) == 1.0  # noise, not the context
        obs, reward, terminated, *_ = env.step(1 - answer)  # wrong answers before the query
        assert reward == 0.0 and not terminated
    assert obs[1] == 1.0 and obs[2] == 0.0 and env.oracle_action() == answer
    _, reward, terminated, *_ = env.step(1 - answer)
    assert reward == -1.0 and terminated


def test_memory_size_queries_one_context_bit():
    env = gym.make("memworld/MemorySize-v0", num_bits=6, delay=3).unwrapped
    obs, _ = env.reset(seed=3)
    bits = (obs[:6] > 0).astype(int)
    for _ in range(4):
        obs, reward, terminated, *_ = env.step(0)
        assert reward == 0.0 and not terminated
    query = int(obs[6:12].argmax())
    assert obs[-2] == 1.0
    _, reward, terminated, *_ = env.step(int(bits[query]))
    assert reward == 1.0 and terminated


def _mean_and_bound(returns):
    return returns.mean(), 5 * returns.std() / np.sqrt(len(returns)) + 1e-3


def test_repeat_first_chance_is_the_echo_policy():
    # The first symbol is in view at step 0, so echoing the current symbol is the
    # best memoryless policy: right at step 0, right 1/k of the time afterwards.
    vec = make_vec("memworld/RepeatFirst-v0", 1024, num_symbols=4, episode_length=8)
    assert vec.chance_return == pytest.approx((1 + 7 * -0.5) / 8)
    assert vec.random_return == pytest.approx(-0.5)
    mean, bound = _mean_and_bound(episode_returns(vec, lambda v: v._observe().argmax(1), 0))
    assert abs(mean - vec.chance_return) <= bound


def test_count_recall_no_memoryless_policy_beats_chance():
    # A memoryless policy sees only (value, query); by symmetry it answers one
    # count when they match and one when they don't. Try every such pair
    # (constant actions are the pairs with a0 == a1: Discrete(L + 1) is too
    # big for the shared constant-action test).
    k, length = 3, 6
    vec = make_vec("memworld/CountRecall-v0", 512, num_values=k, episode_length=length)

    def pair(a_miss, a_match):
        def act(v):
            obs = v._observe()
            match = obs[:, :k].argmax(1) == obs[:, k:].argmax(1)
            return np.where(match, a_match, a_miss)

        return act

    best = -np.inf
    for a_miss in range(3):
        for a_match in range(4):
            mean, bound = _mean_and_bound(episode_returns(vec, pair(a_miss, a_match), seed=1))
            assert mean <= vec.chance_return + bound, (a_miss, a_match)
            best = max(best, mean + bound)
    assert best >= vec.chance_return  # the best pair reaches it: chance is tight


def test_repeat_previous_world_state_when_rows_are_out_of_step():
    """After a partial reset rows sit at different t; the window must still be each row's own."""
    from memworld.envs.tasks.repeat_previous import RepeatPreviousVec

    env = RepeatPreviousVec(num_envs=3, num_symbols=5, delay=3, episode_length=40)
    obs, _ = env.reset(seed=4)
    seen = [[int(o.argmax())] for o in obs]
    rng = np.random.default_rng(0)
    for step in range(9):
        if step == 4:  # restart row 1 only
            obs, info = env.reset(options={"reset_mask": np.array([False, True, False])})
            seen[1] = [int(obs[1].argmax())]
        else:
            obs, _, _, _, info = env.step(rng.integers(0, 5, 3))
            for i in range(3):
                seen[i].append(int(obs[i].argmax()))
    assert len(set(env.t.tolist())) > 1  # really out of step
    state = info["world_state"]
    for i in range(3):
        window = seen[i][-4:]
        want = [0] * (4 - len(window)) + window  # unwritten history is 0
        np.testing.assert_allclose(state[i, :-1] * 4, want, atol=1e-6)
        assert state[i, -1] == pytest.approx(env.t[i] / 40)
