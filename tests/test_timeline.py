"""The scalar env of an open-loop task steps a Timeline: same numbers as stepping its core."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest

from memworld.envs.tasks import (
    associative_recall,
    autoencode,
    bsuite_memory,
    count_recall,
    repeat_first,
    repeat_previous,
)
from memworld.envs.timeline import Timeline

OPEN_LOOP = {
    "RepeatPrevious": (
        repeat_previous.RepeatPrevious,
        dict(num_symbols=3, delay=2, episode_length=9),
    ),
    "RepeatFirst": (repeat_first.RepeatFirst, dict(num_symbols=3, episode_length=7)),
    "CountRecall": (count_recall.CountRecall, dict(num_values=3, episode_length=6)),
    "Autoencode": (autoencode.Autoencode, dict(num_symbols=3, length=4)),
    "MemoryLength": (bsuite_memory.MemoryLength, dict(memory_length=5)),
    "MemorySize": (bsuite_memory.MemorySize, dict(num_bits=3, delay=2)),
    "AssociativeRecall": (
        associative_recall.AssociativeRecall,
        dict(num_pairs=2, num_keys=3, num_values=3, num_distractors=3),
    ),
}
CASES = [
    (name, extra)
    for name in OPEN_LOOP
    for extra in (
        {},
        {"max_episode_steps": 5},
        {"world_state": False},
        {"render_mode": "rgb_array"},
    )
]


@pytest.mark.parametrize("env_id", [f"memworld/{name}Easy-v0" for name in OPEN_LOOP])
def test_open_loop_tasks_step_a_timeline(env_id):
    assert gym.make(env_id).unwrapped._timeline is not None


@pytest.mark.parametrize("env_id", ["memworld/KeyDoorEasy-v0", "memworld/TMazeEasy-v0"])
def test_closed_loop_tasks_step_their_core(env_id):
    assert gym.make(env_id).unwrapped._timeline is None


def test_an_episode_too_large_to_lay_out_steps_the_core():
    env = count_recall.CountRecall(num_values=4, episode_length=1000)  # 1,000 x 1,001 choices
    assert env._timeline is None
    env.reset(seed=0)
    assert abs(env.step(0)[1]) == float(
        np.float32(1e-3)
    )  # rewards are float32, as the core keeps them


@pytest.mark.parametrize(("name", "extra"), CASES)
def test_timeline_equals_the_core_step_for_step(name, extra):
    cls, params = OPEN_LOOP[name]
    fast, slow = cls(**params, **extra), cls(**params, **extra)
    slow._timeline = None  # step the one-row core, as every closed-loop task does
    assert fast._timeline is not None
    rng = np.random.default_rng(0)
    (o1, i1), (o2, i2) = fast.reset(seed=5), slow.reset(seed=5)
    episodes = 0
    for step in range(60):
        np.testing.assert_array_equal(o1, o2)
        assert o1.dtype == o2.dtype and i1.keys() == i2.keys()
        for key in i1:
            np.testing.assert_array_equal(i1[key], i2[key])
        assert fast.oracle_action() == slow.oracle_action()
        if fast.render_mode:
            np.testing.assert_array_equal(fast.render(), slow.render())
        action = fast.oracle_action() if step % 3 else int(rng.integers(fast.action_space.n))
        o1, r1, te1, tr1, i1 = fast.step(action)
        o2, r2, te2, tr2, i2 = slow.step(action)
        assert (r1, te1, tr1) == (r2, te2, tr2)
        assert type(r1) is float and type(te1) is bool and type(tr1) is bool
        if te1 or tr1:
            episodes += 1
            (o1, i1), (o2, i2) = fast.reset(), slow.reset()
    assert episodes >= 3


def test_stepping_outside_an_episode_raises():
    env = repeat_first.RepeatFirst(num_symbols=2, episode_length=2)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(0)
    env.reset(seed=0)
    env.step(0)
    assert env.step(np.int64(1))[2]  # numpy actions take the checked path
    with pytest.raises(RuntimeError, match="episode has ended"):
        env.step(0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.reset()
        env.step(2)


def test_core_reads_the_scalar_envs_time():
    env = repeat_previous.RepeatPrevious(num_symbols=4, delay=1, episode_length=5)
    env.reset(seed=1)
    for _ in range(3):
        env.step(0)
    assert env.core.t[0] == env.core.elapsed[0] == 3


class _WritesItsField(repeat_first.RepeatFirstVec):
    def _step_envs(self, idx, actions):
        self.symbols[idx, 0] = 0  # breaks the open-loop promise
        return super()._step_envs(idx, actions)


def test_a_task_that_writes_its_open_loop_fields_while_stepping_fails_loudly():
    core = _WritesItsField(num_envs=1, num_symbols=2, episode_length=3)
    core.reset(seed=0)
    with pytest.raises(ValueError, match="read-only"):
        Timeline(core).load(core)


@pytest.mark.parametrize("name", OPEN_LOOP)
def test_vector_rows_out_of_step_equal_their_scalar_envs(name):
    """A partial reset puts rows at different steps; each must still be its own scalar env."""
    cls, params = OPEN_LOOP[name]
    vec = cls.vector_cls(num_envs=3, autoreset_mode="same_step", **params)
    singles = [cls(**params) for _ in range(3)]
    obs, info = vec.reset(seed=4)
    firsts = [single.reset(seed=4 + i) for i, single in enumerate(singles)]
    rng = np.random.default_rng(0)
    for step in range(40):
        rows = range(3)
        if step in (2, 9):
            mask = np.arange(3) == (1 if step == 2 else 0)
            obs, info = vec.reset(options={"reset_mask": mask})
            assert not vec._in_step
            rows = np.flatnonzero(mask)
            firsts = {i: singles[i].reset() for i in rows}
        else:
            actions = rng.integers(0, vec.single_action_space.n, 3)
            oracle = vec.oracle_actions()
            assert oracle.tolist() == [single.oracle_action() for single in singles]
            obs, reward, terminated, truncated, info = vec.step(actions)
            firsts = {}
            for i, single in enumerate(singles):
                o, r, te, tr, inf = single.step(int(actions[i]))
                assert (reward[i], terminated[i], truncated[i]) == (np.float32(r), te, tr)
                firsts[i] = single.reset() if te or tr else (o, inf)
        for i in rows:
            np.testing.assert_array_equal(obs[i], firsts[i][0])
            np.testing.assert_array_equal(info["world_state"][i], firsts[i][1]["world_state"])
    assert len(set(vec.t.tolist())) > 1  # really out of step at the end


def test_a_copied_env_lays_out_its_own_episodes():
    env = repeat_previous.RepeatPrevious(num_symbols=4, delay=1, episode_length=6)
    env.reset(seed=0)
    twin = copy.deepcopy(env)
    fresh = repeat_previous.RepeatPrevious(num_symbols=4, delay=1, episode_length=6)
    for a, b in [(twin.reset(seed=9), fresh.reset(seed=9))] + [
        (twin.step(k % 4), fresh.step(k % 4)) for k in range(5)
    ]:
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:-1] == b[1:-1]
