"""The end of a sweep: best trial or Pareto front, failures with reasons, pruned count.

Written to ``<sweep dir>/optimization_results.yaml`` (the official Hydra Optuna sweeper's file
and keys: ``name``, ``best_params``, ``best_value`` or ``solutions``, plus ours), printed, and
logged to W&B as one run in the study's group when the app logs to W&B.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from van_ablate.io import atomic_write_text
from van_ablate.sweep.coordinator import counted, reason, state_counts

RESULTS_NAME = "optimization_results.yaml"
log = logging.getLogger(__name__)


def summarize(
    study: optuna.Study, objectives: Sequence[str], n_trials: int, storage: str
) -> dict[str, Any]:
    """Everything a person asks after a sweep, as plain YAML-able data."""
    trials = study.get_trials(deepcopy=False)
    mine = counted(trials)
    out: dict[str, Any] = {
        "name": "optuna",
        "study_name": study.study_name,
        "storage": storage,
        "objective": list(objectives),
        "directions": [d.name.lower() for d in study.directions],
        "n_trials": n_trials,
        "counts": state_counts(trials),
        "epochs_run": sum(_epochs(t) for t in mine),
    }
    if len(study.directions) == 1:
        try:
            best = study.best_trial
        except ValueError:  # nothing completed (or nothing feasible) yet
            best = None
        out["best_params"] = best.params if best else None
        out["best_value"] = best.value if best else None
        out["best_trial"] = _brief(best) if best else None
    else:
        front = sorted(study.best_trials, key=lambda t: t.values)
        out["solutions"] = [{**_brief(t), "values": t.values} for t in front]
    feasible = out.get("solutions") if "solutions" in out else out["best_trial"]
    if not feasible:
        out["no_feasible_trial"] = infeasibility(mine)
    out["failures"] = [
        {**_brief(t), "reason": reason(t)} for t in mine if t.state == TrialState.FAIL
    ]
    out["pruned"] = [
        {"number": t.number, "epochs": _epochs(t)} for t in mine if t.state == TrialState.PRUNED
    ]
    return out


def infeasibility(trials: Sequence[FrozenTrial]) -> dict[str, Any]:
    """Why no trial is a result: how many finished, and which constraint each broke by how much.

    ``{"finished": n, "broken": {"complexity.macs <= 1e+09": {"trials": n, "least_excess": x}}}``
    (an excess is Optuna's constraint value, > 0 when broken).
    """
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    broken: dict[str, dict[str, Any]] = {}
    for t in done:
        for name, excess in (t.constraints or {}).items():
            if excess > 0:
                entry = broken.setdefault(name, {"trials": 0, "least_excess": excess})
                entry["trials"] += 1
                entry["least_excess"] = min(entry["least_excess"], excess)
    return {"finished": len(done), "broken": broken}


def _explain(why: dict[str, Any]) -> str:
    if why["finished"] == 0:
        return "No trial finished, so there is no result."
    if not why["broken"]:
        return f"No feasible trial among {why['finished']} finished (none completed)."
    parts = [
        f"{name} broken by {b['trials']} (closest missed by {b['least_excess']:.4g})"
        for name, b in why["broken"].items()
    ]
    return f"No feasible trial: all {why['finished']} finished trials broke a constraint: " + (
        "; ".join(parts)
    )


def _brief(t: FrozenTrial) -> dict[str, Any]:
    brief = {"number": t.number, "params": t.params}
    if t.constraints:
        brief["constraints"] = t.constraints
    if "run_dir" in t.user_attrs:
        brief["run_dir"] = t.user_attrs["run_dir"]
    return brief


def _epochs(t: FrozenTrial) -> int:
    return int(t.user_attrs.get("epochs_done", len(t.intermediate_values)))


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def write(summary: dict[str, Any], sweep_dir: Path) -> Path:
    """``optimization_results.yaml`` in the sweep directory, atomically."""
    text = yaml.dump(summary, Dumper=_NoAliases, sort_keys=False, width=100)
    return atomic_write_text(Path(sweep_dir) / RESULTS_NAME, text)


def report(summary: dict[str, Any]) -> None:
    """Log the summary the way a person reads it."""
    c = summary["counts"]
    log.info(
        f"Study {summary['study_name']}: {c['complete']} complete, {c['pruned']} pruned, "
        f"{c['fail']} failed ({c['retried']} stale trials retried) of {summary['n_trials']}; "
        f"{summary['epochs_run']} epochs run"
    )
    if "no_feasible_trial" in summary:
        log.warning(_explain(summary["no_feasible_trial"]))
    elif "solutions" in summary:
        log.info(f"Pareto front ({len(summary['solutions'])} trials):")
        for s in summary["solutions"]:
            log.info(f"    #{s['number']} values {s['values']} params {s['params']}")
    elif summary["best_trial"] is not None:
        log.info(f"Best value: {summary['best_value']} (trial #{summary['best_trial']['number']})")
        log.info(f"Best parameters: {summary['best_params']}")
    for f in summary["failures"]:
        log.info(f"    failed #{f['number']}: {f['reason']}")


def log_to_wandb(summary: dict[str, Any], logger_cfg: Any, sweep_dir: Path) -> None:
    """One W&B run (job_type ``sweep``) in the study's group, holding the summary."""
    import wandb

    from van_ablate.wandb_logger import resolve_mode

    run = wandb.init(
        project=logger_cfg.project,
        entity=logger_cfg.entity,
        dir=sweep_dir,
        group=summary["study_name"],
        job_type="sweep",
        name=f"{summary['study_name']}-summary",
        mode=resolve_mode(logger_cfg.mode),
        config={k: summary[k] for k in ("objective", "directions", "n_trials", "storage")},
        settings=wandb.Settings(console="off", silent=True),
    )
    run.summary.update({f"counts/{k}": v for k, v in summary["counts"].items()})
    run.summary["epochs_run"] = summary["epochs_run"]
    if "no_feasible_trial" in summary:
        run.summary["no_feasible_trial"] = _explain(summary["no_feasible_trial"])
    best = summary.get("best_trial")
    rows = summary["solutions"] if "solutions" in summary else ([best] if best else [])
    names = summary["objective"]
    table = wandb.Table(columns=["number", *names, "params"])
    for r in rows:
        values = r.get("values") or [summary["best_value"]]
        table.add_data(r["number"], *values, str(r["params"]))
    run.log({"pareto_front" if "solutions" in summary else "best": table})
    run.finish()
