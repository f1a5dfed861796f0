"""Re-run LeWorld's phase 3 (or phases 2 and 3) from a run's checkpoint with other settings.

    python bench/leworld_phase3.py RUN [RUN ...] --set request_noise=0.03 [--set phase3_lr=1e-4]
    python bench/leworld_phase3.py RUN [RUN ...] --from joint --set load_balance_coef=0.03

Each run folder (from ``memworld leworld train``) keeps a checkpoint after every phase
with the batch stream and the sampling generator, so a re-run restarts from the same state
and sees the same batches: phase 3 from ``phase2-joint.pt`` by default, phases 2 and 3
from ``phase1-pretrain.pt`` with ``--from joint``. Only the ``TrainingConfig`` fields
given with ``--set`` differ. Without ``--set`` the run's own phases are reproduced (its
``final.pt`` numbers) when run with the run's thread count (``OMP_NUM_THREADS``): another
count sums floats in another order, which moved a thin-margin seed's request z from -0.0
to -0.3. Prints the held-out MSE, the info-request gain (mean, z, fraction of
addresses moved), the least-used SLM's share, the routing entropy and whether the
per-step MSE falls, on the episodes ``memworld leworld eval`` uses, after phase 2 and
after phase 3. The run folders are not written to; the results go to
runs/bench/leworld_phase3.json, and with ``--save DIR`` each re-run becomes a run folder
``DIR/RUN_NAME`` (its config with the changed fields, the run's baselines, the re-run's
checkpoints) that ``memworld leworld eval`` evaluates against the baselines.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

from memworld.leworld.runs import LEWORLD_TRAIN, build, held_out_batches
from memworld.runs import package_versions, read_run_config, write_json, write_results
from memworld.world_models.leworld.config import TrainingConfig, to_dict
from memworld.world_models.leworld.evaluation import acceptance, evaluate, request_gain_z
from memworld.world_models.leworld.training import PHASES, LeWorldTrainer


def setting(text: str) -> tuple[str, object]:
    """``name=value`` -> (name, value), the value read as JSON where it parses."""
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set takes name=value, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def summary(result: dict) -> dict:
    falls = acceptance({0: result})["per-step MSE falls (last vs second quarter)"] == "1/1"
    return {
        "mse": result["mse"]["leworld"],
        "gain": result["info_request_gain"],
        "z": request_gain_z(result),
        "moves": result["request_moves_address"],
        "min_usage": min(result["usage"]),
        "entropy": result["routing_entropy"],
        "falls": falls,
    }


# The phase a re-run starts at -> the checkpoint it starts from.
STARTS = {"joint": "phase1-pretrain.pt", "refine": "phase2-joint.pt"}


def rerun(run: Path, overrides: dict, start: str = "refine", save: Path | None = None) -> dict:
    """Re-run ``run`` from ``start`` with ``overrides``; ``save``: a new run folder for the
    result (config.json with the overrides, the run's baselines.pt, the re-run's checkpoints),
    which ``memworld leworld eval`` reads like any run folder."""
    config = read_run_config(run, "training", LEWORLD_TRAIN)
    training, source, factory = build(config)
    training = dataclasses.replace(training, **overrides)
    trainer = LeWorldTrainer(factory(), training, source=source, run_dir=save)
    trainer.load(run / "checkpoints" / STARTS[start])
    if save is not None:
        rerun_of = {
            "run": str(run),
            "from": start,
            "set": overrides,
            "versions": package_versions(),
        }
        write_json(
            save / "config.json", {**config, "training": to_dict(training), "rerun": rerun_of}
        )
        if (run / "baselines.pt").exists():  # trained on the batches after phase 3's
            shutil.copyfile(run / "baselines.pt", save / "baselines.pt")
    batches = held_out_batches(training)  # the episodes of `memworld leworld eval`
    report = {}
    if start == "refine":  # the run's own phase 2, for the before/after
        report["joint"] = summary(evaluate(trainer.system, batches, None, training.seed))
    for phase in PHASES[PHASES.index(start) :]:
        trainer.train(stop_after=phase)
        report[phase] = summary(evaluate(trainer.system, batches, None, training.seed))
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--set", dest="settings", type=setting, action="append", default=[])
    parser.add_argument(
        "--from",
        dest="start",
        choices=tuple(STARTS),
        default="refine",
        help="re-run from this phase on: refine (phase 3, default) or joint (phases 2 and 3)",
    )
    parser.add_argument(
        "--save",
        type=Path,
        default=None,
        help="write each re-run as a run folder SAVE/RUN_NAME (for `memworld leworld eval`)",
    )
    parser.add_argument("--out", default="runs/bench/leworld_phase3.json")
    args = parser.parse_args(argv)
    overrides = dict(args.settings)
    fields = {f.name for f in dataclasses.fields(TrainingConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        parser.error(f"--set {unknown}: not TrainingConfig fields; choose from {sorted(fields)}")
    report = {}
    print(
        f"{'run':32s} {'after':7s} {'mse':>7s} {'gain':>9s} {'z':>6s} {'moves':>6s} "
        f"{'usage':>6s} {'entropy':>7s} falls"
    )
    for run in args.runs:
        save = None if args.save is None else args.save / run.name
        report[str(run)] = rerun(run, overrides, args.start, save)
        for phase, r in report[str(run)].items():
            print(
                f"{run.name:32s} {phase:7s} {r['mse']:7.4f} {r['gain']:+9.5f} {r['z']:+6.1f} "
                f"{r['moves']:6.3f} {r['min_usage']:6.2f} {r['entropy']:7.2f} {r['falls']}"
            )
    out = Path(args.out)
    write_results(out, {"set": overrides, "from": args.start, "runs": report})
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
