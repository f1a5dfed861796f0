"""Running a sweep on Ray Tune: a local Ray started in-process, or an existing cluster.

Ray Tune schedules the trials (one CPU each by default, at most ``max_concurrent``
at a time), collects the evaluation returns they report, retries a failed trial up
to ``max_failures`` times and, with ``search.method: optuna``, proposes the
hyper-parameters.  Resuming does not rely on Tune's own experiment state: a trial
whose folder holds a complete ``evals.json`` is simply not scheduled again.

On a cluster (``address="auto"`` or ``"ray://host:port"``) every node needs memworld
installed (``pip install -e ".[sweep]"``) and the sweep folder must be a path that
every node can write (a shared file system), since each trial writes its own run folder.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from pathlib import Path

import yaml

from memworld.runs import write_json
from memworld.sweep.config import SEARCH_PREFIX, SweepConfig, Trial
from memworld.sweep.folder import (
    ERROR_FILE,
    best_overrides,
    finished_trials,
    last_error,
    pending_trials,
    trial_folders,
    trial_status,
    unfinished_trials,
)
from memworld.sweep.space import tune_space

INSTALL_HINT = (
    "memworld sweep needs Ray Tune and Optuna, which are an optional extra: "
    'pip install -e ".[sweep]"  (or: pip install "ray[tune]>=2.9" "optuna>=3.5")'
)


class RayMissingError(ImportError):
    """Ray Tune (or Optuna) is not installed; the message says what to install."""


def require_ray(optuna: bool = False) -> None:
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401

        if optuna:
            import optuna as _optuna  # noqa: F401
    except ImportError as err:
        raise RayMissingError(INSTALL_HINT) from err


def run_sweep(
    config: SweepConfig,
    sweep_dir: str | Path,
    address: str | None = None,
    max_concurrent: int | None = None,
    verbose: int = 1,
) -> dict:
    """Run (or resume) every unfinished trial of ``config`` into ``sweep_dir``.

    Args:
        config: the resolved sweep.
        sweep_dir: the sweep folder; its ``sweep.yaml`` is written on the first run.
        address: ``None`` starts a local Ray with this machine's cores; ``"auto"`` or
            ``"ray://host:port"`` joins a running cluster.
        max_concurrent: most trials at a time (default: the config's, else as many as
            the cluster's CPUs allow).
        verbose: Ray Tune's verbosity (0 silent, 1 status, 2 trial results).

    Returns:
        The summary written to ``sweep.json``: finished trials, failures with their
        error, trials still pending, and how many finished trials were skipped.
    """
    if max_concurrent is not None:  # 0 must not fall back to the config's value
        from memworld.memory.base import check_range

        fix = "or leave --max-concurrent out to use the config's tune.max_concurrent"
        check_range("--max-concurrent", max_concurrent, 1, integer=True, fix=fix)
    search = config.search or {}
    require_ray(optuna=search.get("method") == "optuna")
    import ray

    sweep_dir = Path(sweep_dir).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if not (sweep_dir / "sweep.yaml").exists():
        (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    start = time.perf_counter()
    options = dict(
        max_concurrent=config.max_concurrent if max_concurrent is None else max_concurrent,
        verbose=verbose,
    )
    started = _init_ray(address, verbose)
    errors: dict[str, str] = {}
    skipped = 0
    try:
        chosen = None
        if search:
            if search.get("method", "random") == "optuna":
                errors |= _optuna_search(config, sweep_dir, **options)
            else:
                pending = pending_trials(sweep_dir, config.search_trials())
                skipped += len(config.search_trials()) - len(pending)
                errors |= _fit(pending, config, sweep_dir, "search", **options)
            chosen = best_overrides(sweep_dir)
        trials = config.grid_trials(chosen)
        pending = pending_trials(sweep_dir, trials)
        skipped += len(trials) - len(pending)
        errors |= _fit(pending, config, sweep_dir, "train", **options)
    finally:
        if started:
            ray.shutdown()
    names = [t.name for t in trials] + trial_folders(sweep_dir, SEARCH_PREFIX)
    summary = summarize(sweep_dir, names, errors)
    summary.update(
        name=config.name,
        skipped=skipped,
        wall_s=time.perf_counter() - start,
        address=address or "local",
    )
    write_json(sweep_dir / "sweep.json", summary)
    return summary


def summarize(sweep_dir: Path, names: list[str], errors: dict[str, str]) -> dict:
    """Finished trials, failed ones (with their error) and those never run, by name."""
    finished, failures, pending = [], [], []
    for name in names:
        status = trial_status(sweep_dir, name)
        if status is not None:
            finished.append(
                {
                    "trial": name,
                    "mmer": status["mmer"],
                    "env_steps_per_s": status["env_steps_per_s"],
                }
            )
            continue
        error, attempts = last_error(sweep_dir / name)
        if error is None and name in errors:
            error, attempts = errors[name], max(attempts, 1)
        if error is None:
            pending.append(name)
        else:
            failures.append(
                {
                    "trial": name,
                    "attempts": attempts,
                    "error": error,
                    "traceback": str(sweep_dir / name / ERROR_FILE),
                }
            )
    return {"trials": len(names), "finished": finished, "failures": failures, "pending": pending}


def default_sweep_dir(config: SweepConfig, root: str | Path = "runs/sweeps") -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{config.name}-{stamp}"


def _init_ray(address: str | None, verbose: int) -> bool:
    """Start or join Ray unless this process already has; True when this call did."""
    import ray

    if ray.is_initialized():
        return False
    level = logging.INFO if verbose > 0 else logging.WARNING
    for name in ("ray", "ray.tune", "optuna"):
        logging.getLogger(name).setLevel(level)
    options = dict(log_to_driver=verbose > 0, logging_level=level)
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(**local_ray_options(), **options)
    return True


def local_ray_options(num_cpus: int | None = None) -> dict:
    """``ray.init``'s arguments for the local Ray a sweep starts: ``num_cpus`` (default every
    core), no dashboard, and the trials at this process's priority. Ray starts its workers
    15 nice levels below their parent by default, so beside any other busy process a trial
    gets a fraction of a core (an fwp trial of the memory table took 417 s at nice 19 and
    a median of 27 s at nice 10, beside the same two niced jobs on 2 cores).
    ``RAY_worker_niceness`` in the environment still decides where it is set."""
    options: dict = dict(
        address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False
    )
    if "RAY_worker_niceness" not in os.environ:
        options["_system_config"] = {"worker_niceness": 0}
    return options


def _fit(
    trials: list[Trial],
    config: SweepConfig,
    sweep_dir: Path,
    phase: str,
    max_concurrent: int | None,
    verbose: int,
    param_space: dict | None = None,
    search_alg=None,
    num_samples: int = 1,
) -> dict[str, str]:
    """Run ``trials`` as one Tune experiment; returns Tune's error per failed trial name."""
    if not trials or num_samples < 1:
        return {}
    from ray import tune

    from memworld.sweep.trial import resolve_trial, tune_trainable

    specs = {t.name: t.to_dict() for t in trials}
    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable, trials=specs, sweep_dir=str(sweep_dir)),
        {"cpu": config.cpus_per_trial},
    )
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    tuner = tune.Tuner(
        trainable,
        param_space=param_space or {"trial": tune.grid_search(list(specs))},
        tune_config=tune.TuneConfig(
            metric="mmer",
            mode="max",
            search_alg=search_alg,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
            trial_dirname_creator=lambda trial: trial.trial_id,
            reuse_actors=True,  # one worker process per slot: torch and SB3 import once
        ),
        run_config=tune.RunConfig(
            name=f"{phase}-{stamp}",
            storage_path=str(sweep_dir / ".tune"),
            verbose=verbose,
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
        ),
    )
    errors = {}
    for result in tuner.fit():
        if result.error is not None:
            lines = [line for line in str(result.error).splitlines() if line.strip()]
            name = resolve_trial(result.config, specs).name
            errors[name] = lines[-1] if lines else type(result.error).__name__
    return errors


def _optuna_search(config: SweepConfig, sweep_dir: Path, **options) -> dict[str, str]:
    """One Optuna study per env x agent cell, told the results of its finished trials."""
    from ray.tune.search.optuna import OptunaSearch

    search, errors = config.search, {}
    num_samples = int(search.get("num_samples", 8))
    for base in config.base_trials(seeds=config.seeds[:1], prefix=SEARCH_PREFIX):
        cell_dir = sweep_dir / SEARCH_PREFIX / base.cell
        # Finish the trials an interruption cut short, then tell Optuna every result;
        # a new sampler seed per resume keeps it from proposing the same points again.
        errors |= _fit(unfinished_trials(cell_dir), config, sweep_dir, "search", **options)
        done = finished_trials(cell_dir)
        searcher = OptunaSearch(
            seed=int(search.get("seed", 0)) + len(done),
            points_to_evaluate=[d["overrides"] for d in done] or None,
            evaluated_rewards=[d["mmer"] for d in done] or None,
        )
        param_space = {"trial": base.name, **tune_space(search["space"])}
        errors |= _fit(
            [base],
            config,
            sweep_dir,
            "search",
            param_space=param_space,
            search_alg=searcher,
            num_samples=num_samples - len(done),
            **options,
        )
    return errors
