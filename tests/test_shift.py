"""DistributionShift: task ids, oracle, mapping changes, determinism, errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from memworld.envs import DistributionShift
from tests.env_helpers import episode_returns, make_vec


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


def test_oracle_keeps_max_return_across_shifts():
    env = _make(num_envs=4, task="memworld/Autoencode-v0", length=3, shift_every=1, num_tasks=4)
    env.reset(seed=0)
    totals, tasks = np.zeros(4), set()
    for _ in range(5 * 6):  # five episodes of 2 * length steps per row
        _, reward, terminated, _, info = env.step(env.oracle_actions())
        totals += reward
        tasks.update(info["task_id"].tolist())
        if terminated.any():
            np.testing.assert_allclose(totals[terminated], 1.0, atol=1e-5)
            totals[terminated] = 0.0
    assert tasks == {0, 1, 2, 3}


def test_wraps_a_built_env_and_forwards_its_settings():
    inner = make_vec("memworld/CountRecall-v0", 3, autoreset_mode="same_step", episode_length=5)
    env = DistributionShift(task=inner, shift_every=1)
    assert env.num_envs == 3 and env.single_action_space == inner.single_action_space
    assert env.metadata["autoreset_mode"] is inner.autoreset_mode
    with pytest.raises(ValueError, match="episode_length"):
        DistributionShift(task=inner, episode_length=4)
    with pytest.raises(ValueError, match="num_envs"):
        DistributionShift(task=inner, num_envs=2)


def test_mapping_drawn_from_the_reset_seed_when_mapping_seed_is_none():
    def perms(seed):
        env = _make(num_envs=2, mapping_seed=None, num_tasks=4)
        env.reset(seed=seed)
        return env.perms.copy()

    np.testing.assert_array_equal(perms(5), perms(5))
    assert not np.array_equal(perms(5), perms(6))


def test_unseeded_reset_continues_the_curriculum_and_seeded_restarts():
    env = gym.make(
        "memworld/DistributionShift-v0",
        task="memworld/RepeatFirst-v0",
        episode_length=2,
        shift_every=1,
        num_tasks=3,
    ).unwrapped
    env.reset(seed=0)
    for episode in range(4):
        assert env.task_id == episode % 3
        for _ in range(2):
            _, reward, terminated, _, info = env.step(env.oracle_action())
            assert reward == pytest.approx(0.5) and info["task_id"] == episode % 3
        assert terminated
        with pytest.raises(RuntimeError, match="reset"):
            env.step(0)
        env.reset()
    env.reset(seed=0)
    assert env.task_id == 0


def test_render_adds_the_task_and_mapped_answer():
    env = _make(num_envs=2, render_mode="rgb_array", task_id=1, shift_every=None)
    env.reset(seed=0)
    frames, inner = env.render(), env.inner.render()
    assert frames[0].dtype == np.uint8 and frames[0].shape[0] == inner[0].shape[0] + 16
    np.testing.assert_array_equal(frames[0][: inner[0].shape[0]], inner[0])


def test_num_tasks_is_checked_and_short_task_names_resolve():
    with pytest.raises(ValueError, match="num_tasks must be a positive integer, got True"):
        DistributionShift(num_tasks=True)
    # RepeatFirstEasy has 4 actions: 4! = 24 distinct answer mappings.
    with pytest.raises(ValueError, match="num_tasks=25 exceeds the 24 distinct mappings"):
        DistributionShift(task="memworld/RepeatFirstEasy-v0", num_tasks=25)
    short = DistributionShift(task="RepeatFirstEasy", num_tasks=24, mapping_seed=0)
    full = DistributionShift(task="memworld/RepeatFirstEasy-v0", num_tasks=24, mapping_seed=0)
    np.testing.assert_array_equal(short.perms, full.perms)
    with pytest.raises(ValueError, match="did you mean memworld/RepeatFirstEasy-v0"):
        DistributionShift(task="RepeatFrstEasy")
