"""GPU check: is our fast path faster than the official code's setting on the same card?

One command, printed as Markdown to paste into the README with the card's name:

1. Training step of VAN-B0 at 224x224 (timm AdamW, soft-target loss, synthetic batches):
   images/s and peak memory in fp32 eager with the official code's straight-line LKA, against
   bf16 + channels_last + torch.compile with ours. Goal on an H100/H200: at least 3x.
2. Inference images/s at bf16 batch 256 (channels_last, compiled) for VAN-B0..B2. The paper
   reports inference throughput on an RTX 3090 (reference: throughput_reported); goal for
   VAN-B0 on an H100/H200: at least 20,000 images/s.
3. One short epoch of the real app (``python -m van_ablate``) on the built-in data resized to
   224 with the fast settings, to show the whole job runs on the device.

Progress goes to stderr as it happens, the tables to stdout::

    .venv/bin/python scripts/gpu_check.py      # on a machine with a CUDA GPU, under 5 minutes
    .venv/bin/python scripts/gpu_check.py --device cpu --img-size 32 --batch-size 2 --steps 1 \\
        --infer-batch-size 2 --no-compile --app-images 16 --workers 0   # what the tests run
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from torch import nn

from van_ablate.bench import to_straight_line
from van_ablate.train.hardware import configure_threads

REPO = Path(__file__).resolve().parent.parent
TRAIN_GOAL, INFER_GOAL = 3.0, 20_000  # on an H100 or H200 (issue: GPU path measured)


def say(message: str) -> None:
    print(f"[gpu-check] {message}", file=sys.stderr, flush=True)


def _timed(step: Callable[[], None], *, device: str, warmup: int, steps: int) -> float:
    """Seconds for ``steps`` calls after ``warmup`` untimed ones (compilation happens there)."""
    cuda = device.startswith("cuda")
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def train_step_speed(
    model: nn.Module,
    *,
    device: str,
    img_size: int,
    batch_size: int,
    steps: int,
    bf16: bool,
    channels_last: bool,
    compile: bool,
) -> dict[str, float | None]:
    """Images/s of forward + backward + AdamW step, and peak GPU memory in GiB (CUDA only)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt).train()
    optimizer = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
    net = torch.compile(model) if compile else model
    loss_fn = SoftTargetCrossEntropy()
    x = torch.randn(batch_size, 3, img_size, img_size, device=device).contiguous(memory_format=fmt)
    y = torch.softmax(torch.randn(batch_size, model.num_classes, device=device), dim=1)

    def step() -> None:
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    elapsed = _timed(step, device=device, warmup=3, steps=steps)
    return {"images_per_sec": steps * batch_size / elapsed, "peak_mem_gib": _peak_gib(device)}


def inference_speed(
    name: str, *, device: str, img_size: int, batch_size: int, steps: int, compile: bool
) -> dict[str, float | None]:
    """bf16 channels_last inference images/s of model ``name`` and peak memory in GiB."""
    model = timm.create_model(name).to(device, memory_format=torch.channels_last).eval()
    net = torch.compile(model) if compile else model
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            net(x)

    elapsed = _timed(step, device=device, warmup=3, steps=steps)
    return {"images_per_sec": steps * batch_size / elapsed, "peak_mem_gib": _peak_gib(device)}


def app_epoch(
    *, device: str, img_size: int, batch_size: int, compile: bool, images: int, workers: int
) -> dict:
    """One short epoch of ``python -m van_ablate`` with the fast settings; its results.json."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "model=van_b0",
            "logger=none",
            "data=builtin",
            f"data.img_size={img_size}",
            f"data.num_train={images}",
            f"data.num_val={max(images // 4, 1)}",
            f"data.num_workers={workers}",
            f"data.cache_dir={tmp}/cache",
            "train.epochs=1",
            "train.warmup_epochs=0",
            f"train.batch_size={batch_size}",
            f"train.eval_batch_size={batch_size}",
            f"train.device={'cuda' if device.startswith('cuda') else 'cpu'}",
            "train.precision=bf16",
            "train.channels_last=true",
            f"train.compile={str(compile).lower()}",
            f"hydra.run.dir={tmp}/run",
        ]
        proc = subprocess.run([sys.executable, "-m", "van_ablate", *args], cwd=REPO)
        if proc.returncode != 0:
            raise SystemExit(f"error: the app failed with exit code {proc.returncode}")
        return json.loads(Path(tmp, "run", "results.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128, help="training batch")
    p.add_argument("--infer-batch-size", type=int, default=256)
    p.add_argument("--models", nargs="+", default=["van_b0", "van_b1", "van_b2"])
    p.add_argument("--steps", type=int, default=30, help="timed steps per figure")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--app-images", type=int, default=4096, help="built-in images in the epoch")
    p.add_argument("--workers", type=int, default=8, help="the app's data loader workers")
    p.add_argument("--skip-app", action="store_true", help="only the synthetic steps")
    a = p.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: device='cuda': no CUDA device here; use --device cpu", file=sys.stderr)
        raise SystemExit(2)
    configure_threads(os.environ)
    compile = not a.no_compile
    card = torch.cuda.get_device_name() if a.device.startswith("cuda") else "CPU"
    size = dict(device=a.device, img_size=a.img_size, steps=a.steps)
    fast = "bf16 + channels_last" + (" + compile" if compile else "")

    torch.manual_seed(0)
    ours = timm.create_model("van_b0")
    official = to_straight_line(copy.deepcopy(ours))
    say(f"training step, official setting: fp32 eager, straight-line LKA, batch {a.batch_size}")
    base = train_step_speed(
        official, **size, batch_size=a.batch_size, bf16=False, channels_last=False, compile=False
    )
    say(f"training step, ours: {fast}" + (" (compiling first)" if compile else ""))
    quick = train_step_speed(
        ours, **size, batch_size=a.batch_size, bf16=True, channels_last=True, compile=compile
    )
    speedup = quick["images_per_sec"] / base["images_per_sec"]
    print(f"\nVAN-B0 training step, {a.img_size}x{a.img_size}, batch {a.batch_size}, {card}, "
          f"torch {torch.__version__}\n")  # fmt: skip
    print("| setting | LKA | train images/s | peak memory (GiB) |\n|---|---|---:|---:|")
    print(f"| fp32 eager | straight-line (official) | {base['images_per_sec']:.0f} | "
          f"{_gib(base['peak_mem_gib'])} |")  # fmt: skip
    print(f"| {fast} | switchable (ours) | {quick['images_per_sec']:.0f} | "
          f"{_gib(quick['peak_mem_gib'])} |")  # fmt: skip
    print(f"\nspeed-up: {speedup:.2f}x (goal on an H100/H200: >= {TRAIN_GOAL:.0f}x)")

    rows = []
    for name in a.models:
        say(f"inference, {name}: bf16, channels_last, batch {a.infer_batch_size}")
        rows.append(
            (name, inference_speed(name, **size, batch_size=a.infer_batch_size, compile=compile))
        )
    print(f"\nInference, bf16 + channels_last{' + compile' if compile else ''}, "
          f"batch {a.infer_batch_size}, {a.img_size}x{a.img_size}, {card}\n")  # fmt: skip
    print("| model | images/s | peak memory (GiB) |\n|---|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['images_per_sec']:.0f} | {_gib(r['peak_mem_gib'])} |")
    print(f"\ngoal for van_b0 on an H100/H200: >= {INFER_GOAL:,} images/s")

    if not a.skip_app:
        say(f"the app: one epoch of van_b0 on {a.app_images} built-in images at {a.img_size} px")
        r = app_epoch(
            device=a.device,
            img_size=a.img_size,
            batch_size=a.batch_size,
            compile=compile,
            images=a.app_images,
            workers=a.workers,
        )
        e, setup = r["epochs"][-1], r["setup"]
        print(f"\napp (python -m van_ablate, 1 epoch, {a.app_images} built-in images at "
              f"{a.img_size} px): {e['images_per_sec']:.0f} train images/s, status "
              f"{r['status']}, device {setup['device']}, threads {setup['threads']}")  # fmt: skip


if __name__ == "__main__":
    main()
