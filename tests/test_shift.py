"""DistributionShift: task ids, oracle, mapping changes, determinism, errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs import DistributionShift
from tests.env_helpers import episode_returns


def _make(**kwargs):
    return gym.make_vec(
        "memworld/DistributionShift-v0", vectorization_mode="vector_entry_point", **kwargs
    )


def test_task_id_changes_exactly_every_shift_every_episodes():
    env = _make(
        num_envs=3,
        task="memworld/RepeatFirst-v0",
        episode_length=4,
        shift_every=2,
        num_tasks=3,
        autoreset_mode="same_step",
    )
    _, info = env.reset(seed=0)
    assert info["task_id"].tolist() == [0, 0, 0]
    seen = []
    for _ in range(4 * 7):  # 7 episodes of 4 steps
        _, _, terminated, _, info = env.step(env.oracle_actions())
        if terminated.all():
            seen.append(env.task_id[0])
    # after episodes 1..7: task (episodes // 2) % 3
    assert seen == [0, 1, 1, 2, 2, 0, 0]


def test_oracle_through_the_wrapper_earns_max_return_in_every_task():
    for task_id in range(3):
        env = _make(num_envs=8, shift_every=None, task_id=task_id)
        np.testing.assert_allclose(
            episode_returns(env, lambda v: v.oracle_actions(), 1), 1.0, atol=1e-4
        )


def test_mapping_changes_what_a_fixed_policy_earns():
    def unmapped(v):  # the wrapped task's own answer, ignoring the mapping
        return v.inner.oracle_actions()

    same = episode_returns(_make(num_envs=8, shift_every=None, task_id=0), unmapped, 2)
    other = episode_returns(_make(num_envs=8, shift_every=None, task_id=1), unmapped, 2)
    np.testing.assert_allclose(same, 1.0, atol=1e-4)
    assert other.max() < 1.0 - 1e-3
    assert not np.array_equal(_make(num_tasks=3).perms[1], np.arange(4))


def test_same_seed_same_trajectory():
    def run(seed):
        env = _make(num_envs=2, shift_every=1, autoreset_mode="same_step")
        env.reset(seed=seed)
        rng = np.random.default_rng(0)
        out = []
        for _ in range(120):
            obs, reward, *_, info = env.step(rng.integers(0, 4, 2))
            out.append((obs.copy(), reward.copy(), info["task_id"].copy()))
        return out

    a, b = run(3), run(3)
    assert all(all(np.array_equal(x, y) for x, y in zip(p, q)) for p, q in zip(a, b))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shift_every=0), "shift_every"),
        (dict(num_tasks=0), "num_tasks"),
        (dict(task_id=5), "task_id"),
        (dict(task="memworld/OccludedDynamicsEasy-v0"), "Discrete"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistributionShift(num_envs=2, **kwargs)
