"""What a run leaves behind: ``results.json``, checkpoints, W&B and its Optuna trial.

The training loop (:class:`van_ablate.train.loop.Trainer`) tells a :class:`RunRecord` each finished
epoch, each logged step and a stop signal; the record writes them (rank 0 only) and answers
whether the sweep's pruner stops the trial::

    record = RunRecord(cfg, run_dir, ablations=["k7"], resolved=config_dict, dist=dist, ...)
    record.begin()
    pruned = trainer.fit(record, start_epoch=0)
    record.finish("pruned" if pruned else "completed", None)
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from van_ablate import results
from van_ablate.config import Config
from van_ablate.errors import EXIT_DIVERGED, Diverged
from van_ablate.io import atomic_write_json, atomic_write_text
from van_ablate.train import checkpoint, distributed
from van_ablate.train.distributed import DistEnv

log = logging.getLogger(__name__)


class RunRecord:
    """The run's history (epochs, id, wall time) and every file and service it reports to."""

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        *,
        ablations: list[str],
        resolved: dict[str, Any],
        dist: DistEnv,
        description: dict[str, Any],
    ):
        self.cfg, self.run_dir, self.ablations = cfg, Path(run_dir), ablations
        self.resolved, self.dist, self.description = resolved, dist, description
        self.started = time.time()
        self.epochs: list[dict[str, Any]] = []
        self.run_id = uuid.uuid4().hex[:8]
        self.wall_before = 0.0
        self.diverged: dict[str, Any] | None = None
        self.git_commit = results.git_commit() if dist.is_main else None
        self.wandb: Any = None
        self.results: dict[str, Any] = {}
        self.rotate = True  # whether the next last.pt save keeps the present one as previous.pt

    def restore(self, ckpt: dict[str, Any], source: Path) -> None:
        """Continue the history a checkpoint (read from ``source``) carries."""
        # Resumed from a fallback: the present last.pt is damaged, not worth keeping as previous.
        own = source.parent == self.run_dir / "checkpoints"
        self.rotate = not own or source.name == checkpoint.LAST
        self.epochs = list(ckpt["epochs"])
        self.run_id, self.wall_before = ckpt["run_id"], ckpt["wall_time_s"]

    def begin(self) -> None:
        """Write config.yaml, start W&B, mark results.json running."""
        if self.dist.is_main:
            warn_if_foreign(self.run_dir / "results.json")
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(self.resolved))
            self._start_wandb()
        self._write_results("running")

    # ------------------------------------------------------------------ told by the loop

    def epoch_done(self, row: dict[str, Any], trainer: Any) -> bool:
        """Record a finished epoch and save its checkpoints; True when Optuna prunes the trial."""
        self.epochs.append(row)
        state = self._checkpoint(trainer)
        if self.dist.is_main:
            ckpt_dir = self.run_dir / "checkpoints"
            checkpoint.save_last(ckpt_dir, state, keep_previous=self.rotate)
            self.rotate = True
            best, _ = results.summarize_epochs(self.epochs)
            if best["epoch"] == row["epoch"]:
                checkpoint.save(ckpt_dir / checkpoint.BEST, state)
            log.info(_epoch_line(row, trainer.recipe.total_epochs))
            if self.wandb is not None:
                self.wandb.log_epoch(row)
        self._write_results("running")
        return self._report_trial(row)

    def log_step(self, step: int, window: dict[str, float]) -> bool:
        """Log a training window to W&B every ``logger.log_every_steps``; True if logged."""
        if self.wandb is None or step % self.cfg.logger.log_every_steps:
            return False
        self.wandb.log_step(step, window)
        return True

    def stopped(self, trainer: Any, signum: int) -> None:
        """A stop signal mid-epoch: write the checkpoint to resume from at once."""
        state = self._checkpoint(trainer)
        if self.dist.is_main:
            checkpoint.save_last(self.run_dir / "checkpoints", state, keep_previous=self.rotate)
            self.rotate = True
            log.warning(
                "stop signal %d after %d batches of epoch %d (step %d): wrote %s",
                signum,
                trainer.batch,
                len(self.epochs) + 1,
                trainer.step,
                self.run_dir / "checkpoints" / checkpoint.LAST,
            )
        self._note_stop(signum, f"in epoch {len(self.epochs) + 1}")

    def stopped_after_epoch(self, signum: int) -> None:
        """A stop signal during evaluation: the epoch's checkpoint is written already."""
        if self.dist.is_main:
            log.warning(
                "stop signal %d during the evaluation of epoch %d: resumes after it from %s",
                signum,
                len(self.epochs),
                self.run_dir / "checkpoints" / checkpoint.LAST,
            )
        self._note_stop(signum, f"after epoch {len(self.epochs)}")

    def _note_stop(self, signum: int, where: str) -> None:
        self._write_results("running", f"stopped by signal {signum} {where}; resumes from there")
        if self.wandb is not None:
            self.wandb.finish(_wandb_summary(self.results), exit_code=128 + signum)
            self.wandb = None

    # ------------------------------------------------------------------ the end

    def finish(self, status: str, reason: str | None, exit_code: int = 0) -> dict[str, Any]:
        """Write the final results.json, close W&B and print the summary."""
        self._write_results(status, reason)
        if self.dist.is_main:
            sync = None
            if self.wandb is not None:
                sync = self.wandb.finish(_wandb_summary(self.results), exit_code=exit_code)
                self.wandb = None
            print(results.format_summary(self.results, self.run_dir, sync), flush=True)
        return self.results

    def diverge(self, step: int, last_finite: dict[str, Any]) -> None:
        """Finish as ``diverged`` and raise :class:`Diverged`."""
        epoch = len(self.epochs) + 1
        last_epoch = self.epochs[-1] if self.epochs else {}
        last = {k: v for k, v in last_epoch.items() if k.startswith("val_") or k == "epoch"}
        self.diverged = {"epoch": epoch, "step": step, "last_finite": last_finite | last}
        reason = f"loss became non-finite at epoch {epoch}, step {step}"
        self.finish("diverged", reason, exit_code=EXIT_DIVERGED)
        raise Diverged(epoch, step)

    # ------------------------------------------------------------------ helpers

    def _checkpoint(self, trainer: Any) -> dict[str, Any]:
        state = trainer.state_dict()
        state["rng"] = distributed.gather(state["rng"], self.dist)
        return state | {
            "epoch": len(self.epochs),
            "config": self.resolved,
            "model_spec": self.description["model"].to_dict(),
            "epochs": self.epochs,
            "run_id": self.run_id,
            "wall_time_s": self._wall_time(),
        }

    def _wall_time(self) -> float:
        return self.wall_before + time.time() - self.started

    def _report_trial(self, row: dict[str, Any]) -> bool:
        trial = self.cfg.trial
        if trial.storage is None:
            return False
        import optuna  # only sweeps need it

        from van_ablate.sweep.trial import report_epoch

        pruned = False
        if self.dist.is_main:
            metric = results.epoch_counterpart(self.cfg.objective[0])
            try:
                report_epoch(trial, row["epoch"], row[metric])
            except optuna.TrialPruned:
                pruned = True
        return distributed.from_main(pruned, self.dist)

    def _start_wandb(self) -> None:
        lg = self.cfg.logger
        if lg.name != "wandb":
            return
        from van_ablate.wandb_logger import WandbLogger  # only W&B runs import wandb

        trial, model = self.cfg.trial, self.cfg.model.name
        group = trial.study_name or f"{model}/{'+'.join(self.ablations) or 'default'}"
        self.wandb = WandbLogger(
            project=lg.project,
            entity=lg.entity,
            mode=lg.mode,
            run_dir=self.run_dir,
            run_id=self.run_id,
            name=self.run_dir.name,
            group=group,
            tags=[model, *self.ablations, *lg.tags],
            config=self.resolved,
        )

    def _write_results(self, status: str, reason: str | None = None) -> None:
        cfg, trial = self.cfg, self.cfg.trial
        self.results = results.document(
            run_id=self.run_id,
            run_name=self.run_dir.name,
            status=status,
            reason=reason,
            ablations=self.ablations,
            seed=cfg.seed,
            epochs=self.epochs,
            objective=list(cfg.objective),
            diverged=self.diverged,
            trial=None if trial.storage is None else (trial.study_name, trial.number),
            wall_time_s=self._wall_time(),
            git_commit=self.git_commit,
            config=self.resolved,
            **self.description,
        )
        if self.dist.is_main:
            atomic_write_json(self.run_dir / "results.json", self.results)


def warn_if_foreign(path: Path) -> None:
    """Log a one-line warning naming ``path`` when it is not a readable results.json of ours."""
    if not path.is_file():
        return
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        log.warning("%s is damaged (%s); this run replaces it", path, type(err).__name__)
        return
    if not isinstance(doc, dict) or "schema_version" not in doc or "run_id" not in doc:
        log.warning("%s is not a van-ablate results.json; this run replaces it", path)


def _epoch_line(r: dict[str, Any], total: int) -> str:
    return (
        f"epoch {r['epoch']}/{total}  train_loss {r['train_loss']:.4f}  "
        f"val_loss {r['val_loss']:.4f}  val_top1 {r['val_top1']:.2f}  val_top5 {r['val_top5']:.2f}"
        f"  lr {r['lr']:.2e}  {r['images_per_sec']:.0f} img/s  {r['time_s']:.1f} s"
    )


def _wandb_summary(doc: dict[str, Any]) -> dict[str, Any]:
    keep = ("status", "reason", "best", "final", "complexity", "wall_time_s", "objective")
    return {k: doc[k] for k in keep if doc.get(k) is not None}
