"""MemoryPPO: SB3's PPO for policies with any memory module, replaying whole sequences.

The rollout keeps the memory state only at the start of each sequence (the
rollout, or each ``bptt_len`` chunk) plus the episode-start flags.  ``train()``
draws minibatches of whole sequences and replays each from its stored state in
*one* memory forward per minibatch (CleanRL's ppo_atari_lstm design): no
padding, no per-step state copies, no Python loop over steps or episodes.

Everything else - constructor arguments, logging, callbacks, ``learn``,
``save``/``load``, ``set_env``, seeding, TensorBoard - is SB3's PPO.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance
from stable_baselines3.common.vec_env import VecEnv

from memworld.agents.buffers import MemoryRolloutBuffer, MemorySequenceSamples
from memworld.agents.policies import (
    DEFAULT_MEMORY,
    MemoryActorCriticCnnPolicy,
    MemoryActorCriticPolicy,
    MemoryMultiInputActorCriticPolicy,
)
from memworld.agents.ppo_checks import RULES, check_hyperparams, sequences_per_batch
from memworld.agents.ppo_loss import UpdateStats, ppo_losses
from memworld.agents.rollout import collect_memory_rollout
from memworld.agents.sb3_logging import stdout_logger
from memworld.memory import get as get_memory_class
from memworld.memory.base import State

SelfMemoryPPO = TypeVar("SelfMemoryPPO", bound="MemoryPPO")


class MemoryPPO(OnPolicyAlgorithm):
    """PPO (clip) with a memory policy trained by replaying stored sequences.

    Args:
        policy: ``"MlpPolicy"`` (alias ``"MemoryPolicy"``), ``"CnnPolicy"``,
            ``"MultiInputPolicy"`` or a :class:`MemoryActorCriticPolicy` subclass.
            Choose the memory with ``policy_kwargs=dict(memory="lstm",
            memory_kwargs=dict(hidden_dim=128), shared_memory=True)``.
        env: the environment (an SB3 ``VecEnv``, a Gymnasium env or an id).
        learning_rate: Adam learning rate, or a schedule of the remaining progress
            (1 -> 0). None (default): the memory module's ``recommended_lr``
            (3e-3; 1e-3 for ``slot``, whose transformer controller collapses at 3e-3).
        n_steps: steps per env in each rollout.
        batch_size: env-steps per minibatch, a multiple of the sequence length
            (``bptt_len``, or ``n_steps`` without it): a minibatch is
            ``batch_size // sequence_length`` whole sequences.  None (default)
            splits the rollout into 2 minibatches (1 if there is 1 sequence).
            At most the rollout, ``n_steps * n_envs``.
        n_epochs: passes over the rollout per update.
        gamma: discount factor.
        gae_lambda: GAE lambda.
        clip_range: PPO clipping parameter, or a schedule.
        clip_range_vf: value clipping parameter (None: no clipping), or a schedule.
        normalize_advantage: normalise advantages per minibatch.
        ent_coef: entropy coefficient.
        vf_coef: value-loss coefficient.
        max_grad_norm: gradient clipping norm (> 0; ``float("inf")``: no clipping).
        bptt_len: truncated backpropagation through time: replay sequences of
            this many steps from states stored every ``bptt_len`` steps.  Must
            divide ``n_steps``.  None (default) replays whole rollouts.
        aux_coef: weight of the memory modules' ``aux_loss`` in the loss.
        use_sde: generalized State-Dependent Exploration (Box actions).
        sde_sample_freq: resample the gSDE noise every this many steps (-1: per rollout).
        target_kl: stop an update early once the approximate KL exceeds
            ``1.5 * target_kl`` (None: no limit, the default: MemoryPPO's defaults
            rely on large updates).  Settings carried over from another algorithm with
            many epochs at a high rate (20 at ``1e-3``) move the policy about three
            times as far per update as RecurrentPPO, whose gradient clipping shrinks
            its steps; 0.01 caps them (docs/memoryppo.md).
        stats_window_size: episodes averaged for ``rollout/`` logging.
        tensorboard_log: TensorBoard log folder (None: no TensorBoard).
        policy_kwargs: keyword arguments of the policy (see :class:`MemoryActorCriticPolicy`).
        verbose: 0 silent, 1 info, 2 debug.
        seed: seed of the random generators.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        torch_threads: torch's CPU threads while ``learn()`` runs (restored after).
            1 (default): the networks here are small, and a second thread mostly
            waits; on a busy 2-core machine torch's default ran MemoryPPO many
            times slower (docs/memoryppo.md).  None leaves torch's setting alone.
        _init_setup_model: build the networks now.

    Defaults: ``learning_rate=3e-3`` (the LSTM's ``recommended_lr``), ``n_epochs=10``,
    ``gamma=0.9``, ``ent_coef=0.01``, 2 minibatches of whole rollouts and a shared LSTM of 128.
    With 8 envs and ``n_steps=128`` they reach a return of 0.95-0.99 at 50k
    env steps on RepeatPreviousEasy (POPGym's and memworld's, 2-3 seeds each),
    where SB3's PPO defaults (``3e-4``, ``gamma=0.99``) reach 0.1-0.4.  Two
    large minibatches learn as well as four small ones and train faster.
    ``gamma=0.9`` because in memory tasks the reward follows the recalling
    action closely: the long horizon is the memory's job (through BPTT), and a
    short discount cuts the returns' variance.  Raise it (0.99) for tasks whose
    rewards come long after the actions that earn them.

    Value normalisation (``policy_kwargs=dict(value_norm="popart")``, the default):
    the critic learns returns in units of their running mean and standard deviation,
    and its head is rescaled when they move so that its values stay what they were
    (PopArt); returns spread by less than a reward unit are left at their scale.
    With a memory shared by actor and critic, raw returns in the hundreds
    make the value loss's gradient swamp the policy's inside the memory; on CartPole
    without velocities (``gamma=0.999``, 20 epochs, no reward normalisation, GRU,
    60k steps) the deterministic policy then scored 9.4, PopArt 127.8.
    ``value_norm="running"`` normalises without the rescale, ``None`` trains on raw
    returns; ``value_grad_to_memory`` scales the value gradient into a shared memory
    and ``shared_memory=False`` gives the critic a memory of its own (twice the
    memory compute).  With an LSTM and settings carried over from a tuned RecurrentPPO
    run, ``shared_memory=False, value_norm=None`` (RecurrentPPO's own structure) is the
    configuration that, like RecurrentPPO, did not collapse over ten seeds of that
    CartPole reproduction (mean 291.1, none under 120, against the default's 224.3, three).
    The measurements are in docs/memoryppo.md.  Values the policy
    returns and the rollout buffer holds are always in return units.

    Time-limit truncation: the reward of the last step gets ``gamma *
    V(terminal_observation)``, where the value is computed from the memory
    state *after* the last step (before the reset), advanced by one step on
    the terminal observation - the state the agent would have carried on with.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MemoryActorCriticPolicy,
        "MemoryPolicy": MemoryActorCriticPolicy,
        "CnnPolicy": MemoryActorCriticCnnPolicy,
        "MultiInputPolicy": MemoryMultiInputActorCriticPolicy,
    }
    policy: MemoryActorCriticPolicy
    rollout_buffer: MemoryRolloutBuffer

    def __init__(
        self,
        policy: str | type[MemoryActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule | None = None,
        n_steps: int = 128,
        batch_size: int | None = None,
        n_epochs: int = 10,
        gamma: float = 0.9,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.01,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        bptt_len: int | None = None,
        aux_coef: float = 1.0,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        target_kl: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        torch_threads: int | None = 1,
        _init_setup_model: bool = True,
    ) -> None:
        check_hyperparams({k: v for k, v in locals().items() if k in RULES})  # the arguments
        super().__init__(
            policy,
            env,
            learning_rate=recommended_lr(policy_kwargs) if learning_rate is None else learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
            supported_action_spaces=(
                spaces.Box,
                spaces.Discrete,
                spaces.MultiDiscrete,
                spaces.MultiBinary,
            ),
        )
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.clip_range = clip_range
        self.clip_range_vf = clip_range_vf
        self.normalize_advantage = normalize_advantage
        self.bptt_len = bptt_len
        self.aux_coef = aux_coef
        self.target_kl = target_kl
        self.torch_threads = torch_threads
        self._last_memory_state: State | None = None
        if _init_setup_model:
            self._check_batch_size()  # early; train() checks again (a loaded model's n_envs)
            self._setup_model()

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space,
            self.action_space,
            self.lr_schedule,
            use_sde=self.use_sde,
            **self.policy_kwargs,
        )
        if not isinstance(self.policy, MemoryActorCriticPolicy):
            raise TypeError(
                f"MemoryPPO needs a MemoryActorCriticPolicy (or subclass), got "
                f"{type(self.policy).__name__}; pass 'MlpPolicy' and choose the memory in policy_kwargs"
            )
        self.policy = self.policy.to(self.device)
        self.rollout_buffer = MemoryRolloutBuffer(
            self.n_steps,
            self.observation_space,  # type: ignore[arg-type]
            self.action_space,
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            sequence_length=self.bptt_len,
        )
        self._last_memory_state = None
        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

    def _check_batch_size(self) -> int:
        """Sequences per minibatch, from ``batch_size`` in env-steps."""
        return sequences_per_batch(self.batch_size, self.n_steps, self.n_envs, self.bptt_len)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_last_memory_state"]

    # ---------------------------------------------------------------- rollout
    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: MemoryRolloutBuffer,  # type: ignore[override]
        n_rollout_steps: int,
    ) -> bool:
        """Fill ``rollout_buffer`` with ``n_rollout_steps`` steps per env (see SB3's PPO)."""
        return collect_memory_rollout(self, env, callback, rollout_buffer, n_rollout_steps)

    # ------------------------------------------------------------------ train
    def evaluate_sequences(
        self, batch: MemorySequenceSamples
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None, th.Tensor]:
        """Replay a minibatch of sequences: values (T*B,), log-probs, entropy and the aux loss."""
        actions = batch.actions
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()
        values, log_prob, entropy, final_state = self.policy.evaluate_actions(
            batch.observations, actions, batch.states, batch.episode_starts
        )
        return values.flatten(), log_prob, entropy, self.policy.aux_loss(final_state)

    def train(self) -> None:
        """Update the policy from the rollout: ``n_epochs`` passes over minibatches of sequences."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        clip_range_vf = (
            None
            if self.clip_range_vf is None
            else self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]
        )
        self._sequences_per_batch = self._check_batch_size()
        # The critic learns returns in units of their running statistics (value_norm).
        self.policy.update_value_norm(th.as_tensor(self.rollout_buffer.returns, device=self.device))
        stats = UpdateStats()
        continue_training = True
        for epoch in range(self.n_epochs):
            stats.approx_kl = []
            for batch in self.rollout_buffer.get(self._sequences_per_batch):
                values, log_prob, entropy, aux_loss = self.evaluate_sequences(batch)
                normalize = self.policy.normalize_values
                batch = batch._replace(
                    old_values=normalize(batch.old_values), returns=normalize(batch.returns)
                )
                terms = ppo_losses(
                    normalize(values),
                    log_prob,
                    entropy,
                    batch,
                    clip_range,
                    clip_range_vf,
                    self.normalize_advantage,
                )
                loss = (
                    terms.policy
                    + self.ent_coef * terms.entropy
                    + self.vf_coef * terms.value
                    + self.aux_coef * aux_loss
                )
                stats.add(terms, aux_loss)
                if self.target_kl is not None and terms.approx_kl > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(
                            f"Early stopping at step {epoch} due to reaching max kl: "
                            f"{terms.approx_kl:.2f}"
                        )
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(
            self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()
        )
        stats.record(self.logger)
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def _setup_learn(self, *args: Any, **kwargs: Any) -> tuple[int, BaseCallback]:
        # Without tensorboard_log, print as SB3 does but make no $TMPDIR/SB3-* folder
        # (agents.sb3_logging); tensorboard_log and a set_logger() logger are untouched.
        custom = self._custom_logger
        if self.tensorboard_log is None and not custom:
            self._logger = stdout_logger(self.verbose)
            self._custom_logger = True  # keeps super() from configuring its own
        try:
            return super()._setup_learn(*args, **kwargs)
        finally:
            self._custom_logger = custom

    def learn(
        self: SelfMemoryPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "MemoryPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMemoryPPO:
        threads = th.get_num_threads()
        if self.torch_threads is not None:
            th.set_num_threads(self.torch_threads)
        try:
            return super().learn(
                total_timesteps=total_timesteps,
                callback=callback,
                log_interval=log_interval,
                tb_log_name=tb_log_name,
                reset_num_timesteps=reset_num_timesteps,
                progress_bar=progress_bar,
            )
        finally:
            th.set_num_threads(threads)


def recommended_lr(policy_kwargs: dict[str, Any] | None) -> float:
    """The ``recommended_lr`` of the memory module that ``policy_kwargs["memory"]`` names
    (default: the policy's default memory)."""
    spec = (policy_kwargs or {}).get("memory", DEFAULT_MEMORY)
    return float(get_memory_class(spec).recommended_lr)
