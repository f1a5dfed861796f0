"""Configuration of the LeWorld system (shared/seeds/leworld-slm-blm.md) and its presets.

The ``full`` defaults reproduce the document's sizes: a bit memory of 64K words
x 32 bits with a ~21K-parameter learned encoder/decoder, three SLMs of ~745K
parameters each, a BLM of ~11.2M, ~13.5M in total (measured on the reference
task, OccludedDynamicsEasy: 12 observation floats, 22 world-state floats; see
``memworld leworld params``).  ``small`` keeps every mechanism at well under 1M
parameters for tests and the demo.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from memworld.memory.base import check_range

# The reference task whose widths the parameter table is measured on.
REFERENCE_OBS_DIM = 12
REFERENCE_STATE_DIM = 22

# What phase 3 trains the prediction on (TrainingConfig.refine_prediction).
REFINE_PREDICTIONS = ("sample", "soft", "hard", "straight")
# Which addresses phase 3 judges the info request under (TrainingConfig.request_addresses).
REQUEST_ADDRESSES = ("sample", "hard")
# How phase 3 scores a sampled info request (TrainingConfig.request_estimator).
REQUEST_ESTIMATORS = ("batch", "antithetic")
# TrainingConfig's phase lengths (``{name}_steps``) and non-negative loss weights.
PHASE_STEPS = ("codec", "phase1", "phase2", "phase3")
COEFS = (
    "load_balance_coef",
    "recon_coef",
    "address_coef",
    "entropy_coef",
    "request_pg_coef",
)
# BitStore's address halves: 2 ** (1..12) choices each.
MAX_ADDRESS_HALF = 4096


def _check(
    config: object,
    name: str,
    low: float,
    high: float = math.inf,
    fix: str = "",
    *,
    open_low: bool = False,
    allow_inf: bool = False,
) -> None:
    """Refuse ``config.name`` outside ``[low, high]`` (an integer if annotated ``int``);
    infinity is refused unless ``allow_inf``. The error names ``Class.field``."""
    integer = {f.name: f.type for f in dataclasses.fields(config)}[name] == "int"
    check_range(
        f"{type(config).__name__}.{name}",
        getattr(config, name),
        low,
        high,
        integer=integer,
        open_low=open_low,
        open_high=high == math.inf and not allow_inf,
        fix=fix,
    )


@dataclass(frozen=True)
class MemoryConfig:
    """The artificial memory: bit storage plus learned bit encoder/decoder."""

    num_high: int = 256
    """Choices of the address's high byte (address = num_low * high + low)."""
    num_low: int = 256
    """Choices of the address's low byte; num_high * num_low words (65,536)."""
    word_bits: int = 32
    """Bits per stored word."""
    range_len: int = 8
    """Longest address range (words) one read returns."""
    top_k: int = 4
    """Training-time soft read: top-k high x top-k low candidate addresses."""
    hidden: int = 232
    """Hidden width of the bit encoder and of the bit decoder."""

    def __post_init__(self) -> None:
        for name in ("num_high", "num_low"):
            _check(self, name, 2, MAX_ADDRESS_HALF, "use a power of two such as 16 or 256")
            value = getattr(self, name)
            if value & (value - 1):
                raise ValueError(
                    f"MemoryConfig.{name} must be a power of two in [2, {MAX_ADDRESS_HALF}], got "
                    f"{value}; the bit store addresses each half with whole bits (e.g. 256)"
                )
        if self.num_high != self.num_low:
            raise ValueError(
                f"MemoryConfig.num_high ({self.num_high}) and num_low ({self.num_low}) must be "
                "equal; the bit store splits an address into two equal halves"
            )
        _check(self, "word_bits", 1, 32, "a word is one int32")
        _check(self, "range_len", 1, self.num_words, "a read covers at most the whole memory")
        _check(self, "top_k", 1, self.num_high, "the soft read keeps top_k of each address half")
        _check(self, "hidden", 1, fix="the codec's hidden width (232 full, 64 small)")

    @property
    def num_words(self) -> int:
        return self.num_high * self.num_low


@dataclass(frozen=True)
class SLMConfig:
    """One Small LeWorld Model: (past state, current state, characteristics, request) -> range."""

    num_slms: int = 3
    """SLMs competing for the BLM's attention."""
    state_dim: int = 128
    """Embedding width of the past and the current observation."""
    char_dim: int = 64
    """Width of each SLM's learned characteristics vector."""
    hidden: int = 480
    """Width of the address network."""
    layers: int = 2
    """Hidden layers of the address network."""
    read_dim: int = 128
    """Width of the read summary handed to the BLM."""
    range_choices: tuple[int, ...] = (1, 2, 4, 8)
    """Range lengths an SLM may choose (each <= MemoryConfig.range_len); () fixes it."""
    pointer_freqs: int = 8
    """Fourier frequencies (1, 2, 4, ...) encoding each byte of the write pointer."""

    def __post_init__(self) -> None:
        for name, low, fix in (
            ("num_slms", 1, "the BLM routes among at least one SLM"),
            ("state_dim", 1, "a width such as 32"),
            ("char_dim", 0, "0 gives the SLMs no characteristics vector"),
            ("hidden", 1, "a width such as 96"),
            ("layers", 1, "the address network needs at least one hidden layer"),
            ("read_dim", 1, "a width such as 48"),
            ("pointer_freqs", 0, "0 leaves the write pointer out of the SLM's inputs"),
        ):
            _check(self, name, low, fix=fix)
        if not isinstance(self.range_choices, tuple | list):
            raise ValueError(
                f"SLMConfig.range_choices must be a tuple of range lengths, got "
                f"{self.range_choices!r}; e.g. (1, 2, 4, 8), or () for a fixed range_len"
            )
        for i, length in enumerate(self.range_choices):
            check_range(
                f"SLMConfig.range_choices[{i}]",
                length,
                1,
                integer=True,
                fix="a range length in words, at most MemoryConfig.range_len",
            )


@dataclass(frozen=True)
class BLMConfig:
    """The Big LeWorld Model: SLM router, next-state predictor and info requester."""

    d_model: int = 768
    """Width of the residual trunk."""
    d_ff: int = 3456
    """Hidden width of each residual MLP block."""
    blocks: int = 2
    """Residual MLP blocks in the trunk."""
    gate_hidden: int = 256
    """Hidden width of the router that emits one gate logit per SLM."""
    request_dim: int = 128
    """Width of the info request sent to every SLM at the next step."""
    gate_bias: float = 1.0
    """Initial router bias: sigmoid(1) = 0.73, so training starts with all SLMs on."""

    def __post_init__(self) -> None:
        # A residual MLP trunk: no attention heads, so d_model has no divisibility rule.
        for name, low, fix in (
            ("d_model", 1, "a width such as 128"),
            ("d_ff", 1, "a width such as 256"),
            ("blocks", 0, "0 leaves the trunk without residual blocks"),
            ("gate_hidden", 1, "a width such as 64"),
            ("request_dim", 1, "a width such as 32"),
        ):
            _check(self, name, low, fix=fix)
        _check(self, "gate_bias", -math.inf, fix="1.0 starts with every SLM on", open_low=True)


@dataclass(frozen=True)
class TrainingConfig:
    """The three training phases and the data they run on."""

    env_id: str = "memworld/OccludedDynamicsEasy-v0"
    """World-state task (needs ``info['world_state']``)."""
    seed: int = 0
    """Seeds the env, torch and the policy-gradient samples."""
    num_envs: int = 16
    """Episodes per batch (batch rows)."""
    seq_len: int = 48
    """Steps per training sequence (each row's first episode, padded by ``valid``)."""
    oracle_prob: float = 0.8
    """Chance a step's action is the env's oracle action (else uniform random)."""
    codec_steps: int = 2000
    """Reconstruction-only updates of the bit codec before phase 1 (cheap: the codec is
    ~21K parameters); at phase 1's ~100 updates alone a 32-bit word of
    OccludedDynamics decodes with 0.017 MSE, after 2,000 with ~0.004."""
    codec_batch: int = 256
    """Observations per codec update (drawn from a few rollout batches)."""
    phase1_steps: int = 100
    """Pre-train: memory autoencoder, SLM address targets, BLM with every SLM on."""
    phase2_steps: int = 200
    """Joint end-to-end: prediction + load balance through the straight-through mask."""
    phase3_steps: int = 100
    """Info-request refinement: policy gradient with paired-branch rewards."""
    lr: float = 1e-3
    """Adam learning rate of phases 1 and 2."""
    phase3_lr: float = 3e-4
    """Adam learning rate of phase 3's policy gradient."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    load_balance_coef: float = 0.01
    """Weight of the Switch load-balance loss (Switch Transformers used 0.01)."""
    recon_coef: float = 1.0
    """Weight of the bit autoencoder's reconstruction loss."""
    address_coef: float = 0.1
    """Weight of phase 1's address cross-entropy (high + low byte)."""
    pretrain_lags: tuple[int, ...] = (1, 4, 16)
    """Phase 1 address targets: SLM i points ``lag_i`` words behind the write pointer."""
    request_noise: float = 0.1
    """Std of the Gaussian policy over info requests in phase 3."""
    entropy_coef: float = 0.01
    """Entropy bonus of phase 3's address policy (high, low byte and range choice; nats).
    At 0.01 (0 before) KeyDoorEasy's starved SLMs came back into use; 0.03 did no better
    (docs/leworld.md, measured before phase 3's request gradient was confined to the request head)."""
    request_pg_coef: float = 0.01
    """Weight of the info request's policy gradient in phase 3 (its paired-branch score, see
    ``request_estimator``). The request head also gets the prediction loss's gradient through
    the reads of ``refine_prediction``'s pass; at 1 (the default before commit 594ff90, and
    what a run folder without this field used) the policy gradient on that head was 120-230x
    larger (KeyDoorMediumRandomStart) and mostly noise (docs/leworld.md)."""
    refine_prediction: str = "straight"
    """Which pass phase 3 trains the prediction (BLM, router, read summaries) on:
    ``"soft"`` a second pass with phase 2's soft top-k reads, the sampled pass then only
    training the decisions; ``"straight"`` the same with straight-through reads (forward the
    argmax read, as at inference; backward the soft read's gradient); ``"hard"`` with argmax
    reads (no gradient to the addresses); ``"sample"`` the pass of the sampled decisions
    (one pass fewer; the default before commit a8752bc, and what a run folder without this
    field used). The soft read's gradient keeps teaching the SLMs to follow the info
    request: trained on the sampled pass, where reads are hard, the request's gain eroded
    on 2 of 6 OccludedDynamics seeds (z -0.0 and -6.3) and stayed positive on all 6 with
    soft (+0.0005 MSE on the Easy task, about 1.5x the time of a run). Straight-through
    with ``request_pg_coef=0.01`` (the request learning mostly through these reads, argmax
    forward as at inference) lowered the held-out MSE against soft with weight 1
    (KeyDoorMediumRandomStart 0.0834 -> 0.0826 over seeds 0-4, OccludedDynamicsEasy 0.0561
    -> 0.0544 over 0-2) and put the request's gain beyond two standard errors on every seed
    of both (docs/leworld.md)."""
    request_addresses: str = "hard"
    """Under which addresses phase 3's paired branch judges the info request: ``"hard"``
    (a second pass with argmax addresses, as the system reads at inference; the request
    is the only sampled decision there) or ``"sample"`` (the pass of the sampled
    addresses, where the Gumbel noise of the SLMs' picks decides most of what a request
    changes). docs/leworld.md has the measured difference."""
    request_estimator: str = "antithetic"
    """How phase 3 scores a sampled info request ``mu + noise * eps``: ``"antithetic"`` half
    the loss difference between it and its mirror ``mu - noise * eps`` at the same step (one
    more branch per step; the part of the reward that does not depend on ``eps`` cancels
    within the pair), or ``"batch"`` its paired-branch reward against the batch mean
    (REINFORCE with a mean baseline; the default before commit 49974c7, and what a run folder
    without this field used). On KeyDoorMediumRandomStart seeds 10-14 the antithetic score
    raised the request's gain on all five (z 0.2-6.6 -> 2.2-9.4) at the same MSE
    (docs/leworld.md)."""
    log_every: int = 10
    """Updates between metric logs."""

    def __post_init__(self) -> None:
        for name, low, fix in (
            ("seed", 0, "seeds are non-negative integers"),
            ("num_envs", 1, "episodes per batch, 16 by default"),
            ("seq_len", 1, "steps per training sequence, 48 by default"),
            ("codec_batch", 1, "observations per codec update, 256 by default"),
            ("log_every", 1, "log every N updates, 10 by default"),
            *[(f"{n}_steps", 0, "whole updates; 0 skips that stage") for n in PHASE_STEPS],
            *[(coef, 0, "0 turns that loss off") for coef in COEFS],
        ):
            _check(self, name, low, fix=fix)
        _check(self, "oracle_prob", 0, 1, "a probability")
        for name, fix in (
            ("lr", "Adam's step size, 1e-3 by default"),
            ("phase3_lr", "Adam's step size in phase 3, 3e-4 by default"),
            ("request_noise", "the std of the request policy, 0.1 by default"),
        ):
            _check(self, name, 0, fix=fix, open_low=True)
        _check(
            self, "grad_clip", 0, math.inf, "inf turns clipping off", open_low=True, allow_inf=True
        )
        if not isinstance(self.pretrain_lags, tuple | list) or not self.pretrain_lags:
            raise ValueError(
                f"TrainingConfig.pretrain_lags must be a non-empty tuple, one lag per SLM "
                f"(SLMConfig.num_slms), got {self.pretrain_lags!r}; e.g. (1, 4, 16)"
            )
        for i, lag in enumerate(self.pretrain_lags):
            check_range(
                f"TrainingConfig.pretrain_lags[{i}]",
                lag,
                0,
                integer=True,
                fix="a lag counts words behind the write pointer",
            )
        for name, allowed in (
            ("refine_prediction", REFINE_PREDICTIONS),
            ("request_addresses", REQUEST_ADDRESSES),
            ("request_estimator", REQUEST_ESTIMATORS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"TrainingConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )


@dataclass(frozen=True)
class LeWorldConfig:
    """Everything a LeWorld system is built from."""

    memory: MemoryConfig = field(default_factory=MemoryConfig)
    slm: SLMConfig = field(default_factory=SLMConfig)
    blm: BLMConfig = field(default_factory=BLMConfig)

    def __post_init__(self) -> None:
        too_long = [r for r in self.slm.range_choices if r > self.memory.range_len]
        if too_long:
            raise ValueError(
                f"SLMConfig.range_choices {tuple(self.slm.range_choices)} must lie in "
                f"[1, {self.memory.range_len}] (MemoryConfig.range_len), got {too_long}; "
                "raise range_len or drop the longer choices"
            )


def small_preset() -> LeWorldConfig:
    """Every mechanism, well under 1M parameters (about 0.3M)."""
    return LeWorldConfig(
        memory=MemoryConfig(hidden=64),
        slm=SLMConfig(state_dim=32, char_dim=16, hidden=96, layers=2, read_dim=48),
        blm=BLMConfig(d_model=128, d_ff=256, blocks=2, gate_hidden=64, request_dim=32),
    )


def full_preset() -> LeWorldConfig:
    """The document's sizes: ~21K memory, 3 x ~745K SLMs, ~11.2M BLM, ~13.5M total."""
    return LeWorldConfig()


PRESETS = {"small": small_preset, "full": full_preset}


def preset(name: str) -> LeWorldConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown LeWorld preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def to_dict(config: LeWorldConfig | TrainingConfig) -> dict:
    return dataclasses.asdict(config)


def from_dict(data: dict) -> LeWorldConfig:
    """Inverse of :func:`to_dict` for a :class:`LeWorldConfig` (tuples restored)."""
    slm = dict(data["slm"])
    slm["range_choices"] = tuple(slm["range_choices"])
    return LeWorldConfig(
        memory=MemoryConfig(**data["memory"]), slm=SLMConfig(**slm), blm=BLMConfig(**data["blm"])
    )


def training_from_dict(data: dict) -> TrainingConfig:
    data = dict(data)
    data["pretrain_lags"] = tuple(data["pretrain_lags"])
    data.setdefault("request_estimator", "batch")  # run folders from before the field
    data.setdefault("request_pg_coef", 1.0)  # likewise
    data.setdefault("refine_prediction", "sample")  # likewise
    return TrainingConfig(**data)
