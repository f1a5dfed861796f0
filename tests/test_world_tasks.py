"""Exact, hand-checked behaviour of AssociativeRecall, TMaze, KeyDoor and OccludedDynamics."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from memworld.envs.tasks.associative_recall import AssociativeRecall, AssociativeRecallVec
from memworld.envs.tasks.keydoor import DOWN, LEFT, RIGHT, UP, KeyDoor, KeyDoorVec
from memworld.envs.tasks.occluded_dynamics import (
    OccludedDynamicsVec,
    bounce_step,
    occlusion_probabilities,
)
from memworld.envs.tasks.tmaze import BACK, FORWARD, TMaze, TMazeVec
from tests.env_helpers import episode_returns

# ------------------------------------------------------------ AssociativeRecall


def _decode(obs, params):
    k, v = params.num_keys, params.num_values
    key = int(obs[:k].argmax()) if obs[:k].any() else None
    value = int(obs[k : k + v].argmax()) if obs[k : k + v].any() else None
    return key, value, obs[k + v :].tolist()  # flags [pair, distractor, query]


@pytest.mark.parametrize("seed", range(5))
def test_associative_recall_answer_is_the_value_shown_with_the_queried_key(seed):
    params = dict(num_pairs=3, num_keys=4, num_values=3, num_distractors=2)
    for right in (True, False):
        env = AssociativeRecall(**params)
        obs, _ = env.reset(seed=seed)
        seen = {}
        for step in range(5):  # 3 pairs, 2 noise steps
            key, value, flags = _decode(obs, env.params)
            if step < 3:
                assert flags == [1, 0, 0]
                assert key not in seen, "an episode's keys are distinct"
                seen[key] = value
            else:
                assert flags == [0, 1, 0]  # noise: a key and value the agent must ignore
            obs, reward, terminated, _, _ = env.step(2)
            assert reward == 0.0 and not terminated
        key, value, flags = _decode(obs, env.params)
        assert flags == [0, 0, 1] and value is None and key in seen
        assert env.oracle_action() == seen[key]
        action = seen[key] if right else (seen[key] + 1) % 3
        _, reward, terminated, _, _ = env.step(action)
        assert terminated and reward == (1.0 if right else -1.0)


def test_associative_recall_world_state_holds_pairs_and_query():
    vec = AssociativeRecallVec(num_envs=2, num_pairs=2, num_keys=5, num_values=3)
    _, info = vec.reset(seed=0)
    ws = info["world_state"]
    assert ws.shape == (2, 2 * 2 + 4)
    np.testing.assert_allclose(ws[:, :2], vec.keys / 4)
    np.testing.assert_allclose(ws[:, 2:4], vec.values / 2)
    np.testing.assert_allclose(ws[:, 4], vec.query)
    np.testing.assert_array_equal(vec.answers(), vec.values[[0, 1], vec.query])


# ------------------------------------------------------------------- TMaze


@pytest.mark.parametrize("seed", range(6))
def test_tmaze_passive_cue_at_step_zero_names_the_paying_arm(seed):
    length = 6
    for pick_cued in (True, False):
        env = TMaze(length=length, mode="passive")
        obs, _ = env.reset(seed=seed)
        cue = int(obs[:2].argmax())
        assert obs[:2].sum() == 1 and obs[2:].sum() == 0  # the start cell shows only the cue
        for t in range(1, length):
            obs, reward, terminated, _, _ = env.step(1 - cue)  # ignored before the junction
            assert reward == 0.0 and not terminated
            want = [0, 0, 0, 1] if t == length - 1 else [0, 0, 1, 0]
            assert obs.tolist() == want, "no cue after step 0; junction only at the end"
        _, reward, terminated, truncated, _ = env.step(cue if pick_cued else 1 - cue)
        assert terminated and not truncated
        assert reward == (1.0 if pick_cued else -1.0)


def test_tmaze_active_walk_back_to_cue_walls_and_time_limit():
    env = TMaze(length=4, mode="active")
    obs, info = env.reset(seed=3)
    cue = int(obs[:2].argmax())
    assert env.params.max_episode_steps == 8
    obs, *_ = env.step(FORWARD)
    assert obs.tolist() == [0, 0, 1, 0]
    obs, *_ = env.step(BACK)  # back on the start cell: the cue shows again
    assert int(obs[:2].argmax()) == cue and obs[:2].sum() == 1
    obs, *_ = env.step(BACK)  # the wall behind the start
    assert obs[:2].sum() == 1
    obs, reward, terminated, _, info = env.step(2 + cue)  # an arm action in the corridor: no-op
    assert reward == 0.0 and not terminated and info["world_state"][1] == 0.0
    for _ in range(3):
        obs, *_ = env.step(FORWARD)
    assert obs.tolist() == [0, 0, 0, 1]
    obs, reward, terminated, truncated, _ = env.step(FORWARD)  # the junction's far wall
    assert obs.tolist() == [0, 0, 0, 1] and reward == 0.0 and not terminated
    assert truncated, "the 8th step hits the 2 * length time limit, with return 0"


def test_tmaze_active_oracle_walks_length_steps():
    vec = TMazeVec(num_envs=8, length=7, mode="active")
    vec.reset(seed=1)
    for _ in range(6):  # forward to the junction: cells 1 .. 6
        _, reward, terminated, _, _ = vec.step(vec.oracle_actions())
        assert not terminated.any() and (reward == 0.0).all()
    np.testing.assert_array_equal(vec.oracle_actions(), 2 + vec.cue)  # into the cued arm
    _, reward, terminated, _, _ = vec.step(vec.oracle_actions())
    assert terminated.all() and (reward == 1.0).all()


# ----------------------------------------------------------------- KeyDoor


def _walk(env, action, times):
    for _ in range(times):
        out = env.step(action)
    return out


def test_keydoor_oracle_opens_the_key_colour_and_the_other_door_costs():
    for seed in range(6):
        env = KeyDoor(corridor_length=3, num_colors=2, num_distractors=2)
        env.reset(seed=seed)
        core = env.core
        while not core.has_key[0]:
            _, reward, terminated, _, _ = env.step(env.oracle_action())
            assert reward == 0.0 and not terminated
        # Walk on with the oracle into the door room, then to the wrong door's row.
        while core._zone(core.agent_x)[0] != 2:
            env.step(env.oracle_action())
        wrong_row = core.offset + int(np.flatnonzero(core.door_colors[0] != core.key_color[0])[0])
        while core.agent_y[0] != wrong_row:
            env.step(UP if core.agent_y[0] > wrong_row else DOWN)
        _, reward, terminated, _, _ = _walk(env, RIGHT, 2)
        assert terminated and reward == -1.0

        env.reset(seed=seed)
        total, terminated = 0.0, False
        while not terminated:
            _, reward, terminated, _, _ = env.step(env.oracle_action())
            total += reward
        assert total == 1.0
        opened = core.door_colors[0, core.agent_y[0] - core.offset]
        assert opened == core.key_color[0], "the oracle stands before the door of the key's colour"


def test_keydoor_doors_stay_shut_without_the_key_and_key_pickup():
    vec = KeyDoorVec(num_envs=1, corridor_length=2, num_colors=2, num_distractors=0)
    vec.reset(seed=0)
    o = vec.offset
    # Hand-placed: the agent in the door room, in front of door row 0, without the key.
    vec.agent_y[:], vec.agent_x[:] = o, o + vec.door_column - 1
    _, reward, terminated, _, _ = vec.step(np.array([RIGHT]))
    assert reward[0] == 0.0 and not terminated[0]
    assert vec.agent_x[0] == o + vec.door_column - 1, "a locked door blocks like a wall"
    # Next to the key: one step picks it up and removes it from the map.
    vec.agent_y[:], vec.agent_x[:] = vec.key_y, vec.key_x + 1
    if vec.key_x[0] - o == 2:  # the key is on the room's east edge: come from the west
        vec.agent_x[:] = vec.key_x - 1
        vec.step(np.array([RIGHT]))
    else:
        vec.step(np.array([LEFT]))
    assert vec.has_key[0] and vec.grid[0, vec.key_y[0], vec.key_x[0]] == 0
    # Nothing in the observation tells which key is held.
    before = vec._observe()
    vec.key_color[:] = 1 - vec.key_color
    np.testing.assert_array_equal(vec._observe(), before)


def test_keydoor_vector_view_in_an_empty_corridor():
    vec = KeyDoorVec(num_envs=1, corridor_length=5, num_colors=3, num_distractors=0, view_size=3)
    vec.reset(seed=0)
    o = vec.offset
    vec.agent_y[:], vec.agent_x[:] = o + vec.corridor_row, o + vec.corridor_start + 2
    cells = vec._observe().reshape(3, 3, 4 + 3)
    wall = cells[..., 0]
    np.testing.assert_array_equal(wall, [[1, 1, 1], [0, 0, 0], [1, 1, 1]])
    assert cells[..., 1:].sum() == 0, "no key, door, ball or colour in an empty corridor"


def test_keydoor_agent_start_anywhere_covers_every_floor_cell_but_the_key():
    vec = KeyDoorVec(num_envs=512, corridor_length=4, num_colors=2, agent_start="anywhere")
    vec.reset(seed=0)
    o = vec.offset
    starts = set(zip((vec.agent_y - o).tolist(), (vec.agent_x - o).tolist(), strict=True))
    floor = {tuple(cell) for cell in vec._floor.tolist()}
    # 3x3 key room + 4 corridor cells + 3x2 door room.
    assert len(floor) == 9 + 4 + 6 and starts == floor
    assert not ((vec.agent_y == vec.key_y) & (vec.agent_x == vec.key_x)).any()
    assert (vec.grid[np.arange(512), vec.agent_y, vec.agent_x] != 1).all(), "never in a wall"
    # The default start draws what it drew before the option existed (values of that
    # commit): agents in the key room, the same doors and balls.
    default = KeyDoorVec(num_envs=8, corridor_length=4, num_colors=2)
    default.reset(seed=0)
    assert default.agent_y.tolist() == [5, 4, 4, 4, 4, 3, 5, 3]
    assert default.agent_x.tolist() == [3, 4, 5, 5, 4, 3, 3, 3]
    assert default.door_colors[:, 0].tolist() == [1, 0, 0, 1, 1, 0, 1, 1]
    assert default.ball_cells[:, 0].tolist() == [0, 1, 1, 0, 1, 0, 0, 0]


def test_keydoor_pixels_are_channel_last_uint8_images():
    env = KeyDoor(obs_mode="pixels", view_size=5, cell_pixels=8)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (40, 40, 3) and obs.dtype == np.uint8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb3_check_env(KeyDoor(obs_mode="pixels"), warn=False)
    vec = KeyDoorVec(num_envs=16, obs_mode="pixels")
    np.testing.assert_allclose(episode_returns(vec, lambda v: v.oracle_actions(), seed=0), 1.0)


# --------------------------------------------------------- OccludedDynamics


def test_bounce_step_hand_computed():
    pos = np.array([[0.95, 0.02], [0.5, 0.5]])
    vel = np.array([[0.1, -0.05], [-0.2, 0.1]])
    new_pos, new_vel = bounce_step(pos, vel)
    # x: 1.05 leaves through the wall at 1 -> 2 - 1.05 = 0.95, velocity flips;
    # y: -0.03 leaves through 0 -> 0.03, velocity flips; the second object moves freely.
    np.testing.assert_allclose(new_pos, [[0.95, 0.03], [0.3, 0.6]])
    np.testing.assert_allclose(new_vel, [[-0.1, 0.05], [-0.2, 0.1]])


def test_occlusion_probabilities_hand_computed():
    # prob 1, duration 3: visible at 0, 1; hidden 2-4; visible 5; hidden 6-8; visible 9.
    np.testing.assert_allclose(occlusion_probabilities(1.0, 3, 10), [0, 0, 1, 1, 1, 0, 1, 1, 1, 0])
    # prob 1/2, duration 1: an object shows at least once between occlusions, so
    # P(hidden at 3) = P(visible at 2) / 2 = 1/4 and P(hidden at 4) = (1/2 + 1/4) / 2.
    np.testing.assert_allclose(occlusion_probabilities(0.5, 1, 5), [0, 0, 0.5, 0.25, 0.375])


def test_occluded_dynamics_world_state_follows_bounce_step_and_occlusion_pattern():
    n = 3
    vec = OccludedDynamicsVec(num_envs=4, num_objects=n, occlusion_prob=1.0, occlusion_duration=3)
    obs, info = vec.reset(seed=0)
    for t in range(10):
        ws = info["world_state"]
        pos, vel = ws[:, : 2 * n].reshape(4, n, 2), ws[:, 2 * n : 4 * n].reshape(4, n, 2)
        np.testing.assert_allclose(pos, vec.pos, atol=1e-6)
        np.testing.assert_allclose(vel, vec.vel, atol=1e-6)
        hidden = t in (2, 3, 4, 6, 7, 8)  # every object: prob 1 after the two reveal steps
        per_object = obs[:, : 3 * n].reshape(4, n, 3)
        assert (per_object[..., 2] == (0 if hidden else 1)).all()
        if hidden:
            assert (per_object[..., :2] == 0).all()
        else:
            np.testing.assert_array_equal(per_object[..., :2], vec.pos.astype(np.float32))
        obs, _, _, _, info = vec.step(vec.oracle_actions())
        want_pos, want_vel = bounce_step(pos.astype(np.float64), vel.astype(np.float64))
        np.testing.assert_allclose(vec.pos, want_pos, atol=1e-6)
        np.testing.assert_allclose(vec.vel, want_vel, atol=1e-6)


def test_occluded_dynamics_reward_and_query_choice():
    vec = OccludedDynamicsVec(num_envs=1, num_objects=4, episode_length=10)
    vec.reset(seed=1)
    vec.pos[0, vec.query[0]] = [0.3, 0.6]
    _, reward, *_ = vec.step(np.array([[0.4, 0.4]], dtype=np.float32))
    # ((0.1)^2 + (0.2)^2) / 2 = 0.025, over episode_length 10.
    np.testing.assert_allclose(reward, [-0.0025], rtol=1e-5)
    vec.hidden_left[0] = [0, 2, 0, 0]
    vec._draw_query(np.array([0]))
    assert vec.query[0] == 1, "an occluded object is queried whenever there is one"


def test_occluded_dynamics_best_memoryless_predictor_earns_chance():
    vec = OccludedDynamicsVec(num_envs=2048, num_objects=3, occlusion_duration=4)
    n = 3

    def seen_or_centre(v):
        obs = v._observe()
        shown = obs[:, : 3 * n].reshape(-1, n, 3)[np.arange(v.num_envs), obs[:, 3 * n :].argmax(1)]
        return np.where(shown[:, 2:] > 0, shown[:, :2], 0.5).astype(np.float32)

    returns = episode_returns(vec, seen_or_centre, seed=4)
    sem = returns.std() / np.sqrt(len(returns))
    assert abs(returns.mean() - vec.chance_return) < 5 * sem + 1e-4
