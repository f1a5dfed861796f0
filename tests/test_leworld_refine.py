"""LeWorld's phase 3: sampled decisions, their policy gradients and entropy bonus, and the
pass the prediction is trained on (shared/seeds/leworld-slm-blm.md, "info-request refinement")."""

from __future__ import annotations

import math

import pytest
import torch

from memworld.world_models.leworld import TrainingConfig
from memworld.world_models.leworld.rollout import masked_mean, run_sequence
from memworld.world_models.leworld.training import advantage
from tests.test_leworld import tiny_trainer


def test_sampled_address_entropy_is_that_of_uniform_heads(tmp_path):
    trainer = tiny_trainer(tmp_path)
    slms = trainer.system.slms
    for head in (slms.high_head, slms.low_head, slms.range_head):
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    mem, choices = trainer.system.config.memory, slms.range_head.out_features
    batch = trainer.source.batch()
    result = run_sequence(trainer.system, batch, "sample", generator=trainer.generator)
    want = math.log(mem.num_high) + math.log(mem.num_low) + math.log(choices)
    assert torch.allclose(result.address_entropy, torch.full_like(result.address_entropy, want))


def test_refine_entropy_bonus_lowers_the_loss_by_coef_times_entropy(tmp_path):
    base = tiny_trainer(tmp_path / "a", entropy_coef=0.0)
    bonus = tiny_trainer(tmp_path / "b", entropy_coef=0.5)
    loss0, _, extra0 = base.refine_loss(base.source.batch())
    loss1, _, extra1 = bonus.refine_loss(bonus.source.batch())
    assert extra0["address_entropy"] == pytest.approx(extra1["address_entropy"])
    assert extra0["address_entropy"] > 0
    assert loss1.item() == pytest.approx(loss0.item() - 0.5 * extra0["address_entropy"], abs=1e-5)


@pytest.mark.parametrize(
    "judged_under, estimator", [("hard", "batch"), ("sample", "batch"), ("hard", "antithetic")]
)
def test_request_policy_gradient_is_the_noise2_scaled_score_of_the_request_head_alone(
    tmp_path, judged_under, estimator
):
    trainer = tiny_trainer(tmp_path, request_addresses=judged_under, request_estimator=estimator)
    batch, state = trainer.source.batch(), trainer.generator.get_state()
    _, _, extra = trainer.refine_loss(batch)
    trainer.generator.set_state(state)  # replay the same passes
    noise = trainer.config.request_noise
    sampled = run_sequence(
        trainer.system,
        batch,
        "sample",
        with_slm_rewards=True,
        with_request_reward=judged_under == "sample",
        request_noise=noise,
        generator=trainer.generator,
    )
    if judged_under == "hard":  # the request judged under argmax addresses, as at inference
        sampled = run_sequence(
            trainer.system,
            batch,
            "hard",
            with_request_reward=True,
            request_noise=noise,
            generator=trainer.generator,
            antithetic=estimator == "antithetic",
        )
        assert sampled.address_logprob is None  # no address was sampled in this pass
    score = sampled.request_antithetic if estimator == "antithetic" else sampled.request_reward
    adv = advantage(score, batch.valid)
    coef = trainer.config.request_pg_coef
    want = -coef * noise**2 * masked_mean(adv * sampled.request_logprob, batch.valid)
    assert extra["pg_request"] == pytest.approx(want.item(), rel=1e-5)
    blm = trainer.system.blm
    shared = [*blm.trunk.parameters(), *blm.obs_in.parameters(), *blm.reads_in.parameters()]
    grads = torch.autograd.grad(
        want, [blm.request.weight, *shared, *trainer.system.slms.parameters()], allow_unused=True
    )
    assert grads[0].abs().sum() > 0  # the request head learns from its reward
    assert all(g is None or not g.any() for g in grads[1:])  # the trunk and SLMs do not


def test_request_pg_coef_weights_the_requests_policy_gradient(tmp_path):
    extras = {}
    for coef in (1.0, 0.25, 0.0):  # the same batch and sampling noise in each
        trainer = tiny_trainer(tmp_path / str(coef), request_pg_coef=coef)
        _, _, extras[coef] = trainer.refine_loss(trainer.source.batch())
    assert extras[1.0]["pg_request"] != 0
    assert extras[0.25]["pg_request"] == pytest.approx(0.25 * extras[1.0]["pg_request"], rel=1e-5)
    assert extras[0.0]["pg_request"] == 0
    assert extras[0.0]["pg_slm"] == pytest.approx(extras[1.0]["pg_slm"], rel=1e-6)
    with pytest.raises(ValueError, match=r"request_pg_coef must be a number in \[0, inf\)"):
        TrainingConfig(request_pg_coef=-1.0)


@pytest.mark.parametrize("path", ["soft", "hard", "straight"])
def test_refine_can_train_the_prediction_on_a_second_pass(tmp_path, path):
    trainer = tiny_trainer(tmp_path, refine_prediction=path)
    batch = trainer.source.batch()
    loss, result, extra = trainer.refine_loss(batch)
    second = run_sequence(trainer.system, batch, path)
    assert torch.allclose(result.loss, second.loss)
    assert extra["sampled_mse"] != pytest.approx(second.mean_loss().item())
    loss.backward()  # the sampled decisions still get their policy gradient
    head = trainer.system.slms.high_head.weight.grad[0]
    assert head is not None and head.abs().sum() > 0
    assert extra["pg_slm"] != 0.0 and extra["pg_request"] != 0.0


def test_refine_can_train_the_prediction_on_the_sampled_pass(tmp_path):
    trainer = tiny_trainer(tmp_path, refine_prediction="sample")
    batch, state = trainer.source.batch(), trainer.generator.get_state()
    _, result, extra = trainer.refine_loss(batch)
    assert "sampled_mse" not in extra  # one pass trains both the decisions and the prediction
    trainer.generator.set_state(state)  # replay the sampled pass
    noise = trainer.config.request_noise
    sampled = run_sequence(
        trainer.system, batch, "sample", request_noise=noise, generator=trainer.generator
    )
    assert torch.allclose(result.loss, sampled.loss)
    assert not torch.allclose(result.loss, run_sequence(trainer.system, batch, "soft").loss)


def test_refine_prediction_names_its_choices():
    with pytest.raises(ValueError, match="refine_prediction must be one of"):
        TrainingConfig(refine_prediction="argmax")
    with pytest.raises(ValueError, match="request_addresses must be one of"):
        TrainingConfig(request_addresses="soft")
    with pytest.raises(ValueError, match=r"request_estimator must be one of \('batch', 'antith"):
        TrainingConfig(request_estimator="mirror")


def test_antithetic_score_is_half_the_loss_difference_of_the_mirrored_request_a_step_later(
    tmp_path,
):
    trainer = tiny_trainer(tmp_path)
    system, batch, noise = trainer.system, trainer.source.batch(), 0.3
    batch.valid[-2:, 0] = False  # a row that ends early
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        result = run_sequence(
            system,
            batch,
            "hard",
            with_request_reward=True,
            request_noise=noise,
            generator=gen,
            antithetic=True,
        )
    gen.manual_seed(5)  # the same noise, stepped by hand
    state, mirror, losses = system.initial_state(batch.valid.shape[1]), None, []
    with torch.no_grad():
        for t in range(batch.valid.shape[0]):
            written, _ = system.write(state, batch.obs[t])
            out = system.think(written, batch.obs[t], "hard")
            loss = (out.prediction - batch.target[t]).pow(2).mean(-1)
            if mirror is not None:
                flipped = system.think(written, batch.obs[t], "hard", request_override=mirror)
                losses.append(((flipped.prediction - batch.target[t]).pow(2).mean(-1) - loss) / 2)
            eps = noise * torch.randn(out.request.shape, generator=gen)
            mirror = out.request - eps
            state = {
                **written,
                "past_obs": batch.obs[t],
                "request": out.request + eps,
                "pointer": state["pointer"] + 1,
            }
    want = torch.stack(losses) * batch.valid[1:]  # r_t's score is measured at t + 1
    torch.testing.assert_close(result.request_antithetic[:-1], want)
    assert not result.request_antithetic[-1].any()  # the last request has no next step
    assert want.abs().sum() > 0
    for kwargs in ({"request_noise": noise}, {"with_request_reward": True}):
        with pytest.raises(ValueError, match="with_request_reward=True and request_noise > 0"):
            run_sequence(system, batch, "hard", antithetic=True, **kwargs)
