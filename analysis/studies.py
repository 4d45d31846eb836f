"""Optuna studies as report inputs: trials with their states, values and user attributes.

The sweeps (Table 3 grid, kernel sizes, the multi-objective LKA search) live in Optuna storages;
this module opens one, turns its trials into a DataFrame (one row per trial) and follows each
trial's ``run_dir`` user attribute, where the sweeper recorded one, to the run's results.json, so
a study alone regenerates the paper's tables.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from van_ablate.errors import ConfigError
from van_ablate.sweep.coordinator import SWEEP, sweep_objective
from van_ablate.sweep.storage import open_storage


def load_study(storage: str, study_name: str | None = None) -> optuna.Study:
    """Open ``study_name`` in ``storage`` (a journal file or a URL, as the sweeper takes it).

    Without a name, the storage's only study (a multi-objective sweep's ``<name>.pruning`` twin
    does not count).
    """
    if "://" not in storage and not Path(storage).is_file():
        allowed = "no such file; must be a journal file or an SQLAlchemy URL (sqlite:///x.db)"
        raise ConfigError("--storage", storage, allowed)
    opened = open_storage(storage, key="--storage")
    names = optuna.get_all_study_names(storage=opened)
    if study_name is None:
        studies = [n for n in names if not (n.endswith(".pruning") and n[:-8] in names)]
        if len(studies) != 1:
            allowed = f"the storage holds {len(studies)} studies; name one: {', '.join(studies)}"
            raise ConfigError("--study", None, allowed)
        study_name = studies[0]
    if study_name not in names:
        raise ConfigError("--study", study_name, f"not in the storage; one of {', '.join(names)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study_name, storage=opened)


def objective_names(study: optuna.Study) -> list[str]:
    """The study's objective names: results paths such as best.val_top1, as the sweeper stored
    them (or Optuna's metric names); ``value``/``value_<i>`` for a study that has none."""
    # Optuna 5 shows a study's system attributes only through its storage.
    sweep = study._storage.get_study_system_attrs(study._study_id).get(SWEEP) or {}
    names = study.metric_names or sweep_objective(sweep)
    if isinstance(names, str):
        names = [names]
    if names and len(names) == len(study.directions):
        return [str(n) for n in names]
    return (
        ["value"]
        if len(study.directions) == 1
        else [f"value_{i}" for i in range(len(study.directions))]
    )


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, one column per objective, ``param.*`` and ``attr.*``.

    Built from the frozen trials rather than ``trials_dataframe()`` so that objective columns
    carry their results names and the constraint values (``feasible``) come along.
    """
    names = objective_names(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        # A pruned trial keeps the objectives of the epochs it ran (the sweeper's user attr).
        values = t.values or t.user_attrs.get("objective_values") or [math.nan] * len(names)
        duration = t.duration.total_seconds() if t.duration is not None else math.nan
        rows.append(
            {
                "study_name": study.study_name,
                "number": t.number,
                "state": t.state.name,
                **dict(zip(names, values, strict=True)),
                "feasible": all(c <= 0 for c in t.constraints.values()),
                "duration_s": duration,
                **{f"param.{k}": _plain(v) for k, v in t.params.items()},
                **{f"attr.{k}": _plain(v) for k, v in t.user_attrs.items()},
            }
        )
    frame = pd.DataFrame(rows)
    frame.attrs["objective"] = names
    frame.attrs["directions"] = [d.name.lower() for d in study.directions]
    return frame


def results_paths(trials: pd.DataFrame) -> list[Path]:
    """The results.json of each trial's run directory (the sweeper's ``run_dir`` user attr)."""
    if "attr.run_dir" not in trials:
        return []
    paths = (Path(d) / "results.json" for d in trials["attr.run_dir"].dropna())
    return [p for p in paths if p.is_file()]


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
