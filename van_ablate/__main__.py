"""``python -m van_ablate`` (console script ``van-ablate``): train and evaluate one LKA variant.

The Hydra app over ``conf/`` (groups model, lka, ablation, data, train, logger)::

    python -m van_ablate +ablation=no_sigmoid
    python -m van_ablate +ablation=[no_dw_conv,sigmoid] lka.kernel_size=35 logger=none
    torchrun --nproc_per_node 8 -m van_ablate model=van_b0 data=imagenet train=paper

Bad input ends with one line ``error: <key>=<value>: <what is allowed>`` on stderr and exit code
2 (``EXIT_CONFIG``); a run whose loss turns non-finite exits with 3 (``EXIT_DIVERGED``); a run
stopped by SIGTERM or SIGUSR2 writes a checkpoint, prints ``stopped: ...`` and exits with
128 + the signal's number (143, 140), ready to be resumed.
``HYDRA_FULL_ERROR=1`` shows the full traceback instead. In a multirun the errors are raised so
the sweeper records the job as failed.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import (
    ConfigCompositionException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)
from omegaconf.nodes import BooleanNode, FloatNode, IntegerNode, StringNode

from van_ablate import checks
from van_ablate.config import CONF_PACKAGE, Config, register_configs, validate
from van_ablate.errors import EXIT_CONFIG, EXIT_DIVERGED, ConfigError, Diverged, Preempted
from van_ablate.runs import ablations_from_overrides, run_name

OmegaConf.register_new_resolver("van_ablate.run_name", run_name, replace=True)
register_configs()

_TYPE_WORDS = (
    (BooleanNode, "true or false"),
    (IntegerNode, "an integer"),
    (FloatNode, "a number"),
    (StringNode, "a string"),
)
_ELEMENT_WORDS = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
_task_started = False
_TRACEBACK_ENV = "_VAN_ABLATE_FULL_ERROR"
# fvcore (used by van_ablate.model.complexity) scripts a loss with the deprecated torch.jit.script.
warnings.filterwarnings("ignore", ".*torch.jit.script.* is deprecated", FutureWarning)


@hydra.main(version_base="1.3", config_path=f"pkg://{CONF_PACKAGE}", config_name="config")
def task(cfg: DictConfig) -> float | list[float]:
    """Hydra's task function: one training job; returns the configured objective."""
    global _task_started
    _task_started = True
    hc = HydraConfig.get()
    ablations = ablations_from_overrides(hc.overrides.task) or _ablation_choice(hc)
    run_dir = Path(hc.runtime.output_dir)
    try:
        return train_job(cfg, run_dir, ablations, parallel_jobs=_jobs_side_by_side(hc))
    except (ConfigError, Diverged, Preempted) as err:
        if isinstance(err, ConfigError):
            _discard_if_untouched(run_dir)
        if hc.mode == RunMode.MULTIRUN or _user_wants_traceback():
            raise
        if isinstance(err, Preempted):
            _exit(str(err), err.exit_code, prefix="stopped")
        _exit(str(err), EXIT_DIVERGED if isinstance(err, Diverged) else EXIT_CONFIG)


def _discard_if_untouched(run_dir: Path) -> None:
    """Remove a run directory that bad input left holding only Hydra's empty log file."""
    entries = list(run_dir.iterdir()) if run_dir.is_dir() else []
    if all(e.is_file() and e.suffix == ".log" and e.stat().st_size == 0 for e in entries):
        for e in entries:
            e.unlink()
        run_dir.rmdir()


def train_job(
    cfg: DictConfig, run_dir: Path, ablations: list[str], *, parallel_jobs: int = 1
) -> float | list[float]:
    """Validate ``cfg``, train in ``run_dir``, return the objective (one float or a list).

    ``parallel_jobs`` jobs run side by side on this machine and share its CPUs' threads.
    """
    from van_ablate.train import job  # imported after Hydra has set up logging
    from van_ablate.train.distributed import DistEnv
    from van_ablate.train.hardware import configure_threads

    configure_threads(os.environ, parallel_jobs=parallel_jobs)
    results = job.run(
        validate(cfg, ablations),
        run_dir,
        ablations=ablations,
        resolved=OmegaConf.to_container(cfg, resolve=True),
        dist=DistEnv.from_env(dict(os.environ)),
    )
    values = results["objective"]["values"]
    return values[0] if len(values) == 1 else values


def main(argv: Sequence[str] | None = None) -> None:
    """Run the app; user errors become one line on stderr and a non-zero exit code."""
    global _task_started
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    traceback_wanted = _user_wants_traceback()
    _task_started = False
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises; we print the one line below
    os.environ[_TRACEBACK_ENV] = "1" if traceback_wanted else "0"
    try:
        task()
    except Diverged as err:
        _exit(str(err), EXIT_DIVERGED)
    except Preempted as err:
        _exit(str(err), err.exit_code, prefix="stopped")
    except Exception as err:
        message = None if traceback_wanted else explain(err, sys.argv[1:])
        if message is None:
            raise
        _exit(message, EXIT_CONFIG)
    finally:
        if not traceback_wanted:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        os.environ.pop(_TRACEBACK_ENV, None)


def explain(err: BaseException, overrides: Sequence[str]) -> str | None:
    """One line naming key, value and what is allowed for a user error; None for a bug."""
    if isinstance(err, ConfigError):
        return str(err)
    if isinstance(err, MissingConfigException):
        group, _, name = (err.missing_cfg_file or "").rpartition("/")
        if err.options is not None and group:
            return f"{group}={name!r}: must be one of {', '.join(sorted(err.options))}"
        return checks.first_line(err)
    if isinstance(err, OverrideParseException):
        return f"{err.override}: not a valid override ({checks.first_line(err)})"
    if isinstance(err, ConfigCompositionException):
        cause = err.__cause__
        if isinstance(cause, OmegaConfBaseException) and cause.full_key:
            key = cause.full_key.partition("[")[0]  # model.dims[0] -> model.dims
            value = _override_value(overrides, key)
            if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
                parent, _, _ = key.rpartition(".")
                return f"{key}={value}: {checks.unknown_key(key, value, _keys(parent)).allowed}"
            if isinstance(cause, ValidationError):
                return f"{key}={value}: must be {_expected_type(key) or cause.msg.splitlines()[0]}"
        return checks.first_line(err)
    if isinstance(err, OSError) and not _task_started:
        # Hydra creates the run directory (and its log file) before the task starts.
        return f"hydra.run.dir={err.filename!r}: cannot create or write it ({err.strerror})"
    return None


def _jobs_side_by_side(hc: DictConfig) -> int:
    """Jobs of this multirun running at once on this machine: the smaller of the sweeper's
    trials in flight and the local launcher's processes (1 for one job, the basic launcher or a
    cluster launcher, whose jobs get machines of their own)."""
    if hc.mode != RunMode.MULTIRUN:
        return 1
    target = str(hc.launcher.get("_target_", ""))
    if not target.endswith(("JoblibLauncher", "submitit_launcher.LocalLauncher")):
        return 1
    counts = [hc.sweeper.get("n_jobs"), hc.launcher.get("n_jobs")]
    return min((n for n in counts if isinstance(n, int) and n > 0), default=1)


def _user_wants_traceback() -> bool:
    if _TRACEBACK_ENV in os.environ:  # set by main() while Hydra's own variable is forced on
        return os.environ[_TRACEBACK_ENV] == "1"
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _ablation_choice(hc: DictConfig) -> list[str]:
    choice = hc.runtime.choices.get("ablation")
    return [choice] if isinstance(choice, str) else []


def _override_value(overrides: Sequence[str], key: str) -> str:
    """The value given for ``key`` on the command line (the last one, as Hydra applies them)."""
    values = [
        o.input_line.partition("=")[2]
        for o in OverridesParser.create().parse_overrides(list(overrides))
        if o.key_or_group == key
    ]
    return values[-1] if values else "?"


def _keys(parent: str) -> list[str]:
    node = OmegaConf.structured(Config)
    node = OmegaConf.select(node, parent) if parent else node
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def _expected_type(key: str) -> str | None:
    """What the schema allows at ``key`` in words, e.g. "an integer" or "a list of numbers"."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.structured(Config)
    node = OmegaConf.select(node, parent) if parent else node
    if not isinstance(node, DictConfig) or leaf not in node:
        return None
    child = node._get_node(leaf)
    optional = " or null" if child._is_optional() else ""
    if isinstance(child, ListConfig):
        element = _ELEMENT_WORDS.get(child._metadata.element_type)
        return f"a list of {element}{optional}" if element else None
    for kind, words in _TYPE_WORDS:
        if isinstance(child, kind):
            return words + optional
    return None


def _exit(message: str, code: int, prefix: str = "error") -> None:
    print(f"{prefix}: {message}", file=sys.stderr)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
