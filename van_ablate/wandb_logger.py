"""Weights & Biases for one training job (``logger=wandb``): config, metrics, summary.

Offline without waiting when there is no API key or the server cannot be reached, so a job on a
cluster node without network, or on a laptop never logged in, still keeps its W&B record in
``<run dir>/wandb/`` for ``wandb sync`` later.
"""

from __future__ import annotations

import netrc
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

DEFAULT_HOST = "https://api.wandb.ai"


def has_api_key(base_url: str) -> bool:
    """Whether W&B would find a key: ``WANDB_API_KEY`` or a ``~/.netrc`` entry for the host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = os.environ.get("NETRC") or Path.home() / ".netrc"
    try:
        return netrc.netrc(path).authenticators(urlparse(base_url).hostname or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def reachable(base_url: str, timeout_s: float = 2.0) -> bool:
    """Whether a TCP connection to the W&B server opens within ``timeout_s``."""
    url = urlparse(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def resolve_mode(mode: str) -> str:
    """online / offline / disabled: ``WANDB_MODE`` wins, ``auto`` checks key and server."""
    env = os.environ.get("WANDB_MODE")
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    if mode != "auto":
        return mode
    base_url = os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)
    return "online" if has_api_key(base_url) and reachable(base_url) else "offline"


class WandbLogger:
    """One W&B run per job; a resumed job continues the same run (its id is the run id)."""

    def __init__(
        self,
        *,
        project: str,
        entity: str | None,
        mode: str,
        run_dir: Path,
        run_id: str,
        name: str,
        group: str,
        tags: list[str],
        config: dict[str, Any],
    ):
        import wandb

        self.mode = resolve_mode(mode)
        self.run = wandb.init(
            project=project,
            entity=entity,
            dir=run_dir,
            id=run_id,
            name=name,
            group=group,
            tags=tags,
            config=config,
            mode=self.mode,
            resume="allow",
            settings=wandb.Settings(console="off", silent=True),
        )
        # Step metrics follow the optimizer step, epoch metrics the epoch: a resumed run may
        # re-log a step, which W&B's own monotonic step would drop.
        self.run.define_metric("train/step")
        self.run.define_metric("train/*", step_metric="train/step")
        self.run.define_metric("epoch")
        self.run.define_metric("epoch/*", step_metric="epoch")

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        """Per-step training metrics (loss, lr, images/s)."""
        self.run.log({"train/step": step, **{f"train/{k}": v for k, v in metrics.items()}})

    def log_epoch(self, record: dict[str, Any]) -> None:
        """One ``results.json`` epoch record."""
        metrics = {f"epoch/{k}": v for k, v in record.items() if k != "epoch"}
        self.run.log({"epoch": record["epoch"], **metrics})

    def finish(self, summary: dict[str, Any], exit_code: int = 0) -> str | None:
        """Store the results summary and close the run; the ``wandb sync`` command if offline."""
        self.run.summary.update(summary)
        sync_dir = Path(self.run.settings.sync_dir)
        self.run.finish(exit_code=exit_code)
        if self.mode == "offline":
            return f"wandb sync {sync_dir}"
        return None
