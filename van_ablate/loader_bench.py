"""Is a run input-bound? Loader images/s with the paper's transforms against the training step.

Writes a small ImageFolder of JPEGs into a temporary folder, builds the training loader as a run
with ``data=imagenet`` does (:func:`van_ablate.data.loaders.build_loaders` with
``conf/data/imagenet.yaml``:
the paper's random-resized crops, flips, RandAugment and random erasing through timm; Sec. 4.1,
reference: imagenet_recipe), and times ``--epochs`` passes over it for each loader setting
(workers, pin memory, persistent workers, prefetch factor). Then it times the model's training
step (forward + backward, :func:`van_ablate.bench.benchmark`) at the same batch size on the same
device. A setting whose loader delivers fewer images/s than the step consumes leaves the model
waiting: the run is input-bound::

    python -m van_ablate.loader_bench --model van_b0 --batch-size 32 --images 512

On a CPU the loader workers and the model share the cores; timed apart, the loader figure is
what the workers deliver when the model does not compete with them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from van_ablate import checks
from van_ablate.bench import benchmark
from van_ablate.cli_args import OneLineParser
from van_ablate.data.loaders import DataConfig, build_loaders
from van_ablate.errors import EXIT_CONFIG, ConfigError
from van_ablate.model.van import ARCHS
from van_ablate.paper.ablation import CONF_PACKAGE
from van_ablate.train.hardware import available_cpus, configure_threads

__all__ = ["LoaderSetting", "default_settings", "loader_images_per_sec", "main", "write_jpegs"]


@dataclasses.dataclass(frozen=True)
class LoaderSetting:
    """One way to run the training loader."""

    workers: int
    pin_memory: bool = False
    persistent_workers: bool = False
    prefetch_factor: int | None = None  # None: torch's default (2 batches per worker)


def default_settings(cpus: int, *, cuda: bool) -> list[LoaderSetting]:
    """No workers, then one, half and all of ``cpus``; at all, persistent workers, a deeper
    prefetch and (on CUDA) pinned memory, each added in turn.

    >>> [s.workers for s in default_settings(4, cuda=False)]
    [0, 1, 2, 4, 4, 4]
    """
    counts = sorted({0, 1, max(1, cpus // 2), cpus})
    most = counts[-1]
    settings = [LoaderSetting(w, pin_memory=cuda) for w in counts]
    settings.append(LoaderSetting(most, pin_memory=cuda, persistent_workers=True))
    settings.append(
        LoaderSetting(most, pin_memory=cuda, persistent_workers=True, prefetch_factor=4)
    )
    return settings


def write_jpegs(root: Path, *, images: int, classes: int = 4, size: int = 224) -> Path:
    """``root/{train,validation}/class_<c>/<n>.jpg``: ``images`` training JPEGs of ``size`` px
    (smooth random shapes plus noise, so they compress like photographs), one per class to
    validate."""
    rng = np.random.default_rng(0)
    for split, count in (("train", images), ("validation", classes)):
        for n in range(count):
            folder = root / split / f"class_{n % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            smooth = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
            pixels = np.asarray(smooth, dtype=np.float32) + rng.normal(0, 12, (size, size, 3))
            img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            img.save(folder / f"{n}.jpg", quality=90)
    return root


def paper_data_config(root: Path, *, img_size: int, workers: int) -> DataConfig:
    """``conf/data/imagenet.yaml`` (the paper's transforms) reading ``root``."""
    fields = yaml.safe_load((resources.files(CONF_PACKAGE) / "data" / "imagenet.yaml").read_text())
    return DataConfig(**fields | {"root": str(root), "img_size": img_size, "num_workers": workers})


def loader_images_per_sec(
    root: Path,
    setting: LoaderSetting,
    *,
    batch_size: int,
    img_size: int,
    epochs: int,
    device: str,
) -> float:
    """Training images/s the loader delivers over ``epochs`` passes, worker start-up included."""
    cfg = paper_data_config(root, img_size=img_size, workers=setting.workers)
    train, _, _ = build_loaders(
        cfg,
        batch_size=batch_size,
        eval_batch_size=batch_size,
        seed=0,
        device=device,
        pin_memory=setting.pin_memory,
        persistent_workers=setting.persistent_workers,
        prefetch_factor=setting.prefetch_factor,
    )
    seen = 0
    started = time.perf_counter()
    for epoch in range(epochs):
        train.set_epoch(epoch)
        for x, _ in train:
            seen += len(x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def _say(message: str) -> None:
    print(f"[loader-bench] {message}", file=sys.stderr, flush=True)


def _table(rows: list[dict[str, Any]], step: float, note: str) -> str:
    import pandas as pd

    table = pd.DataFrame(
        [
            {
                "workers": r["workers"],
                "pin_memory": r["pin_memory"],
                "persistent_workers": r["persistent_workers"],
                "prefetch_factor": r["prefetch_factor"] or "default",
                "loader img/s": f"{r['loader_img_s']:.1f}",
                "train step img/s": f"{step:.1f}",
                "input-bound": "yes" if r["input_bound"] else "no",
            }
            for r in rows
        ]
    )
    return table.to_markdown(index=False, disable_numparse=True) + "\n\n" + note


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m van_ablate.loader_bench``: loader settings against the model's training step."""
    parser = OneLineParser(
        prog="python -m van_ablate.loader_bench",
        description="Training loader images/s (paper transforms) against the training step.",
    )
    parser.add_argument("--model", default="van_b0")
    parser.add_argument("--img-size", type=int, default=224, help="JPEG and crop size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=512, help="training JPEGs written")
    parser.add_argument("--epochs", type=int, default=2, help="passes timed per setting")
    parser.add_argument("--workers", type=int, nargs="+", help="worker counts (default: 0..CPUs)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks of the train step")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")
    args = parser.parse_args(argv)
    try:
        for key in ("img_size", "batch_size", "images", "epochs", "repeats"):
            checks.at_least(key, getattr(args, key), 1)
        if args.images < args.batch_size:
            raise ConfigError("images", args.images, f"must be >= --batch-size {args.batch_size}")
        if args.workers is not None and min(args.workers) < 0:
            raise ConfigError("workers", args.workers, "must be integers >= 0")
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device", "cuda", "CUDA is not available here; use cpu")
        checks.one_of("model", args.model, ARCHS)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    threads = configure_threads(os.environ)
    cuda = device == "cuda"
    settings = default_settings(available_cpus(), cuda=cuda)
    if args.workers is not None:
        settings = [LoaderSetting(w, pin_memory=cuda) for w in args.workers]
    rows = []
    with tempfile.TemporaryDirectory(prefix="van_ablate_loader_") as tmp:
        _say(f"writing {args.images} JPEGs of {args.img_size} px to {tmp}")
        write_jpegs(Path(tmp), images=args.images, size=args.img_size)
        for i, s in enumerate(settings, 1):
            _say(f"loader {i}/{len(settings)}: {dataclasses.asdict(s)}, {args.epochs} epoch(s)")
            rate = loader_images_per_sec(
                Path(tmp),
                s,
                batch_size=args.batch_size,
                img_size=args.img_size,
                epochs=args.epochs,
                device=device,
            )
            _say(f"loader {i}/{len(settings)}: {rate:.1f} img/s")
            rows.append(dataclasses.asdict(s) | {"loader_img_s": rate})
    import timm

    torch.manual_seed(0)
    model = timm.create_model(args.model)
    _say(f"training step of {args.model} at {args.img_size} px, batch {args.batch_size}")
    timed = benchmark(
        {args.model: model},
        batch_size=args.batch_size,
        img_size=args.img_size,
        device=device,
        channels_last=True,  # as both training presets run
        warmup=1,
        iters=1,
        repeats=args.repeats,
        say=_say,
    )
    step = timed[args.model]["train"]["median"]
    for r in rows:
        r |= {"train_step_img_s": step, "input_bound": r["loader_img_s"] < step}
    if args.format == "json":
        import json

        print(json.dumps({"device": device, "threads": threads, "loaders": rows}, indent=2))
        return 0
    note = (
        f"{args.model}, {args.img_size} px, batch {args.batch_size}, on {device} with {threads} "
        f"thread(s); loader: {args.images} JPEGs x {args.epochs} epoch(s) with the paper's "
        f"train transforms; train step: median of {args.repeats} steps (channels_last)."
    )
    print(_table(rows, step, note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
