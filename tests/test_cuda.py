"""The ``cuda`` paths: every memory module, MemoryPPO's state replay, the CLI and LeWorld.

Skipped where torch sees no CUDA device (CI); run on a GPU machine with
``pytest tests/test_cuda.py``. Each test compares against the CPU result or
checks exact replay, so a tensor left on the wrong device or a device-dependent
result fails here.
"""

from __future__ import annotations

import json

import pytest
import torch

from memworld import memory
from tests.test_memory_ppo import cue_env, small_kwargs
from tests.test_memory_ppo_replay import _assert_replay_exact, _replay_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
ENV = "memworld/OccludedDynamicsEasy-v0"


def _move(state: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in state.items()}


@pytest.mark.parametrize("name", memory.names())
def test_module_on_cuda_matches_cpu_and_trains(name):
    cpu = memory.make(name, input_dim=6, **small_kwargs(name))
    gpu = memory.make(name, input_dim=6, **small_kwargs(name)).to(CUDA)
    gpu.load_state_dict(cpu.state_dict())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, 6, generator=gen)
    starts = torch.zeros(7, 3, dtype=torch.bool)
    starts[0], starts[4, 1] = True, True
    cpu.eval(), gpu.eval()
    with torch.no_grad():
        y_cpu, s_cpu = cpu(x, cpu.initial_state(3, "cpu"), starts)
        y_gpu, s_gpu = gpu(x.to(CUDA), gpu.initial_state(3, CUDA), starts.to(CUDA))
    assert all(v.device.type == "cuda" for v in s_gpu.values())
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=1e-4, rtol=1e-4)
    for key in s_cpu:
        torch.testing.assert_close(
            s_gpu[key].cpu().float(), s_cpu[key].float(), atol=1e-4, rtol=1e-4, msg=key
        )
    gpu.train()
    x_gpu = x.to(CUDA).requires_grad_()
    y, state = gpu(x_gpu, gpu.initial_state(3, CUDA), starts.to(CUDA))
    aux = gpu.aux_loss(state)
    assert aux.device.type == "cuda"
    (y.pow(2).mean() + aux).backward()
    grads = [x_gpu.grad] + [p.grad for p in gpu.parameters() if p.requires_grad]
    assert all(g is not None and g.is_cuda and g.isfinite().all() for g in grads)
    assert all(isinstance(v, float) for v in gpu.diagnostics(state).values())


@pytest.mark.parametrize("name", memory.names())
def test_memory_ppo_replay_is_exact_on_cuda(name):
    model = _replay_model(
        cue_env(), bptt_len=7, device="cuda", memory=name, memory_kwargs=small_kwargs(name)
    )
    assert next(model.policy.parameters()).is_cuda
    model.learn(2 * 3 * 14)
    _assert_replay_exact(model)


def test_cli_trains_and_evaluates_memory_ppo_on_cuda(tmp_path):
    from memworld.cli import main

    main(
        [
            "train",
            "--env",
            "memworld/RepeatPreviousEasy-v0",
            "--memory",
            "slot",
            "--steps",
            "512",
            "--n-envs",
            "4",
            "--device",
            "cuda",
            "--root",
            str(tmp_path),
            "--quiet",
        ]
    )
    (run,) = [p.parent for p in tmp_path.rglob("config.json")]
    assert json.loads((run / "config.json").read_text())["train"]["device"] == "cuda"
    main(["eval", str(run), "--episodes", "2"])
    assert (run / "eval.json").exists()


def test_leworld_trains_on_cuda_and_resumes_a_cpu_checkpoint(tmp_path):
    from memworld.world_models.leworld import LeWorldSystem, TrainingConfig, preset
    from memworld.world_models.leworld.data import RolloutSource
    from memworld.world_models.leworld.training import LeWorldTrainer

    config = TrainingConfig(
        env_id=ENV, num_envs=4, seq_len=8, phase1_steps=2, phase2_steps=2, phase3_steps=2
    )
    source = RolloutSource(ENV, 4, 8, seed=0)

    def trainer(folder, device):
        system = LeWorldSystem(preset("small"), source.obs_dim, source.state_dim)
        return LeWorldTrainer(system, config, source, folder, device=device)

    gpu = trainer(tmp_path / "gpu", "cuda")
    history = gpu.train()
    assert [m["phase"] for m in history] == ["pretrain", "joint", "refine"]
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in history)
    assert all(p.is_cuda for p in gpu.system.parameters())
    cpu = trainer(tmp_path / "cpu", "cpu")
    cpu.phase, cpu.step = 0, 0
    cpu.update()
    cpu.save("phase1-pretrain.pt")
    resumed = trainer(tmp_path / "resumed", "cuda")
    resumed.load(tmp_path / "cpu" / "checkpoints" / "phase1-pretrain.pt")
    assert (resumed.phase, resumed.step) == (1, 0)
    assert [m["phase"] for m in resumed.train()] == ["joint", "refine"]


def test_leworld_cli_trains_on_cuda_with_baselines(tmp_path):
    from memworld.leworld.cli import main

    run = tmp_path / "run"
    main(
        [
            "leworld",
            "train",
            "--steps",
            "8",
            "--num-envs",
            "4",
            "--seq-len",
            "8",
            "--device",
            "cuda",
            "--run-dir",
            str(run),
        ]
    )
    mse = json.loads((run / "eval.json").read_text())["seeds"]["0"]["mse"]
    assert {"leworld", "no_memory", "gru"} <= set(mse)
    assert all(value == value for value in mse.values())  # no NaN
