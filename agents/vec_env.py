"""A native Gymnasium ``VectorEnv`` seen as a Stable-Baselines3 ``VecEnv``.

SB3 wants one Python object per env (``DummyVecEnv``) and its own autoreset
convention: when an episode ends, ``step`` already returns the first
observation of the next one and puts the last one in
``infos[i]["terminal_observation"]``.  memworld's tasks are batched cores, so
re-splitting them would throw their speed away.  :class:`GymnasiumVecEnvAdapter`
keeps the batch whole and only converts the conventions:

- same-step autoreset: used as is (``infos["final_obs"]`` becomes
  ``terminal_observation``);
- next-step or disabled autoreset: the finished rows are reset at once with
  ``reset(options={"reset_mask": dones})`` (Gymnasium >= 1.0 vector envs and
  memworld's cores support it), which gives the same result;
- ``TimeLimit.truncated`` is set where an episode was truncated and not
  terminated, so algorithms bootstrap from the terminal observation's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

MEMWORLD_PREFIX = "memworld/"


class GymnasiumVecEnvAdapter(VecEnv):
    """Wrap a Gymnasium ``VectorEnv`` as an SB3 ``VecEnv`` without splitting the batch.

    Args:
        vector_env: any ``gymnasium.vector.VectorEnv``.  Same-step autoreset is
            cheapest; next-step and disabled autoreset are converted with a
            masked ``reset`` of the rows that finished.

    ``seed()`` takes effect at the next ``reset()`` (SB3's convention) and
    seeds env ``i`` with ``seed + i``.  ``get_attr``/``set_attr``/``env_method``
    go to the sub-envs of a ``SyncVectorEnv``/``AsyncVectorEnv``; a native
    batched env is one object, so they act on it once (see each method).
    """

    def __init__(self, vector_env: gym.vector.VectorEnv) -> None:
        if not isinstance(vector_env, gym.vector.VectorEnv):
            raise TypeError(
                f"vector_env must be a gymnasium.vector.VectorEnv, got {type(vector_env).__name__}; "
                "build one with gym.make_vec(...)"
            )
        self.vector_env = vector_env
        mode = vector_env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        self.autoreset_mode = AutoresetMode(mode) if isinstance(mode, str) else mode
        self._actions: np.ndarray | None = None
        super().__init__(
            vector_env.num_envs,
            vector_env.single_observation_space,
            vector_env.single_action_space,
        )

    # ------------------------------------------------------------------ stepping
    def reset(self):
        # SB3's seed() stores seed + i for env i; Gymnasium's int seed means the same.
        seed = self._seeds[0]
        options = self._options[0] or None
        obs, infos = self.vector_env.reset(seed=seed, options=options)
        self.reset_infos = _unbatch_infos(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return _copy_obs(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, infos = self.vector_env.step(self._actions)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        dones = terminated | truncated
        obs = _copy_obs(obs)
        if not dones.any():
            return obs, np.asarray(rewards, np.float32), dones, _unbatch_infos(infos, self.num_envs)

        ended = np.flatnonzero(dones)
        if self.autoreset_mode is AutoresetMode.SAME_STEP:
            if "final_obs" not in infos:
                raise RuntimeError(
                    "the vector env runs same-step autoreset but put no infos['final_obs'] "
                    "on the step an episode ended; it does not follow Gymnasium's convention"
                )
            final_obs = infos["final_obs"]
            final_info = infos.get("final_info", {})
            step_infos = _unbatch_infos(_drop_final_keys(infos), self.num_envs)
            final_infos = _unbatch_infos(final_info, self.num_envs, rows=ended)
        else:
            # The finished rows still hold their last observation: keep it and reset them now.
            final_obs = _copy_obs(obs)
            step_infos = _unbatch_infos(infos, self.num_envs)
            final_infos = {i: step_infos[i] for i in ended}
            try:
                obs, reset_info = self.vector_env.reset(options={"reset_mask": dones})
            except (TypeError, ValueError, NotImplementedError) as err:
                raise RuntimeError(
                    f"the vector env uses autoreset_mode={self.autoreset_mode} and does not "
                    "support reset(options={'reset_mask': ...}); build it with same-step "
                    "autoreset instead, e.g. gym.make_vec(..., vector_kwargs={'autoreset_mode': "
                    "gym.vector.AutoresetMode.SAME_STEP})"
                ) from err
            obs = _copy_obs(obs)
            step_infos = list(step_infos)
            reset_rows = _unbatch_infos(reset_info, self.num_envs, rows=ended)
            for i in ended:
                step_infos[i] = reset_rows[i]
        for i in ended:
            # SB3: infos[i] is the final step's info; the new episode's info goes to reset_infos.
            self.reset_infos[i] = step_infos[i]
            info = dict(final_infos.get(i, {}))
            info["terminal_observation"] = _row(final_obs, i)
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            step_infos[i] = info
        return obs, np.asarray(rewards, np.float32), dones, step_infos

    def close(self) -> None:
        self.vector_env.close()

    # ------------------------------------------------------------ env access
    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.vector_env.render()
        if frames is None:
            return [None] * self.num_envs
        if isinstance(frames, np.ndarray) and frames.ndim == 3:  # one tiled frame
            return [frames]
        return list(frames)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Per sub-env values; for a native batched env, its one value for every index."""
        rows = self._get_indices(indices)
        if hasattr(self.vector_env, "envs") or _is_async(self.vector_env):
            values = self.vector_env.get_attr(attr_name)
            return [values[i] for i in rows]
        value = getattr(self.vector_env, attr_name)
        return [value for _ in rows]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set on each sub-env; a native batched env can only be set as a whole."""
        rows = list(self._get_indices(indices))
        if hasattr(self.vector_env, "envs"):
            for i in rows:
                setattr(self.vector_env.envs[i], attr_name, value)
            return
        if _is_async(self.vector_env):
            values = list(self.vector_env.get_attr(attr_name))
            for i in rows:
                values[i] = value
            self.vector_env.set_attr(attr_name, values)
            return
        if sorted(rows) != list(range(self.num_envs)):
            raise ValueError(
                f"cannot set {attr_name!r} on envs {rows} only: a batched "
                f"{type(self.vector_env).__name__} is one object; pass indices=None"
            )
        setattr(self.vector_env, attr_name, value)

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        """Call a method per sub-env; a native batched env runs it once, its result for each index."""
        rows = self._get_indices(indices)
        if hasattr(self.vector_env, "envs"):
            return [
                getattr(self.vector_env.envs[i], method_name)(*method_args, **method_kwargs)
                for i in rows
            ]
        if _is_async(self.vector_env):
            results = self.vector_env.call(method_name, *method_args, **method_kwargs)
            return [results[i] for i in rows]
        result = getattr(self.vector_env, method_name)(*method_args, **method_kwargs)
        return [result for _ in rows]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None):
        rows = self._get_indices(indices)
        if hasattr(self.vector_env, "envs"):
            return [is_wrapped(self.vector_env.envs[i], wrapper_class) for i in rows]
        return [False for _ in rows]

    def _get_indices(self, indices: VecEnvIndices):
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int | np.integer):
            return [int(indices)]
        return indices


def make_vec_env(
    env_id: str,
    n_envs: int = 1,
    seed: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    monitor: bool = True,
    **kwargs: Any,
) -> VecEnv:
    """Build an SB3 ``VecEnv`` for ``env_id``, batched where the env is.

    Args:
        env_id: a Gymnasium id or a memworld short name (``KeyDoorEasy``).  ``memworld/...`` ids are built once as a batched
            core (``vector_entry_point``, same-step autoreset) and wrapped in
            :class:`GymnasiumVecEnvAdapter`; other ids go to SB3's
            ``make_vec_env`` (one env object each).
        n_envs: number of envs in the batch.
        seed: env ``i`` is seeded ``seed + i`` at the first reset (None: random).
        env_kwargs: keyword arguments for the env constructor (task parameters).
        monitor: wrap the adapter in SB3's ``VecMonitor`` so that episode returns
            and lengths reach the logger and ``evaluate_policy`` (memworld ids only;
            SB3's ``make_vec_env`` always adds its per-env ``Monitor``).
        **kwargs: passed on to SB3's ``make_vec_env`` for non-memworld ids.
    """
    from memworld import envs  # (registers the memworld ids)

    env_id = envs.resolve_id(env_id)  # a short name such as "KeyDoorEasy" works too
    env_kwargs = dict(env_kwargs or {})
    if not env_id.startswith(MEMWORLD_PREFIX):
        return sb3_make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs, **kwargs)
    if kwargs:
        raise TypeError(
            f"unexpected arguments {sorted(kwargs)} for a memworld id; task parameters go in "
            "env_kwargs=dict(...)"
        )

    env_kwargs.setdefault("autoreset_mode", AutoresetMode.SAME_STEP)
    vector_env = gym.make_vec(
        env_id, num_envs=n_envs, vectorization_mode="vector_entry_point", **env_kwargs
    )
    venv: VecEnv = GymnasiumVecEnvAdapter(vector_env)
    venv.seed(seed)
    if monitor:
        venv = VecMonitor(venv)
    return venv


# ------------------------------------------------------------------ helpers
def _is_async(vector_env: gym.vector.VectorEnv) -> bool:
    return isinstance(vector_env, gym.vector.AsyncVectorEnv)


def _copy_obs(obs: Any) -> Any:
    # Batched cores may reuse their output buffers; SB3 keeps the last observation.
    if isinstance(obs, dict):
        return {k: np.array(v) for k, v in obs.items()}
    return np.array(obs)


def _row(batch: Any, i: int) -> Any:
    """Row ``i`` of a batched observation (array, object array or dict of arrays)."""
    if isinstance(batch, dict):
        return {k: _row(v, i) for k, v in batch.items()}
    return np.array(batch[i])


def _drop_final_keys(infos: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in infos.items()
        if k not in ("final_obs", "_final_obs", "final_info", "_final_info")
    }


def _unbatch_infos(infos: dict[str, Any], num_envs: int, rows: np.ndarray | None = None) -> Any:
    """Gymnasium's dict of batched values (``"_key"`` masks) -> one dict per env.

    Returns a list of ``num_envs`` dicts, or, with ``rows``, a dict {row: info} for those rows.
    """
    out: dict[int, dict[str, Any]] = {}
    wanted = range(num_envs) if rows is None else rows
    for i in wanted:
        out[int(i)] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get("_" + key)
        for i in wanted:
            if mask is not None and not mask[i]:
                continue
            if isinstance(value, dict):
                out[int(i)][key] = _unbatch_infos(value, num_envs, rows=np.array([i]))[int(i)]
            else:
                out[int(i)][key] = value[i]
    return [out[i] for i in range(num_envs)] if rows is None else out
