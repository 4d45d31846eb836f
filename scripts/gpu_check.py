"""GPU check of the training job: VAN-B0 at 224x224 with bf16, channels_last and torch.compile.

Two parts, both printed as Markdown to paste into the README with the card's name:

1. The training step the job runs (timm AdamW, soft-target loss, bf16 autocast, channels_last,
   torch.compile) on synthetic 224x224 batches: images/s and peak memory, for plain fp32 eager
   and for bf16 + channels_last + compile. The paper reports 2140 images/s *inference* for
   VAN-B0 on an RTX 3090 (reference: throughput_reported); this measures training.
2. The real app for one short epoch on the built-in data resized to 224 with the same settings
   (``python -m van_ablate model=van_b0 ...``), to show the whole job runs on CUDA.

    python scripts/gpu_check.py                      # on a machine with a CUDA GPU
    python scripts/gpu_check.py --device cpu --img-size 64 --batch-size 8 --steps 2 --no-compile
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2

import van_ablate  # noqa: F401  (registers van_b0 with timm)

REPO = Path(__file__).resolve().parent.parent


def train_step_speed(
    *,
    device: str,
    img_size: int,
    batch_size: int,
    steps: int,
    bf16: bool,
    channels_last: bool,
    compile: bool,
) -> dict[str, float]:
    """Images/s of forward + backward + AdamW step, and peak GPU memory in GiB."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = timm.create_model("van_b0", num_classes=1000).to(device, memory_format=fmt)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
    net = torch.compile(model) if compile else model
    loss_fn = SoftTargetCrossEntropy()
    x = torch.randn(batch_size, 3, img_size, img_size, device=device).contiguous(memory_format=fmt)
    y = torch.softmax(torch.randn(batch_size, 1000, device=device), dim=1)

    def step() -> None:
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    cuda = device.startswith("cuda")
    for _ in range(3):  # warm-up (and compilation)
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {"images_per_sec": steps * batch_size / elapsed, "peak_mem_gib": peak}


def app_epoch(*, device: str, img_size: int, batch_size: int, compile: bool) -> dict:
    """One short epoch of ``python -m van_ablate`` with the GPU settings; its results.json."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "model=van_b0",
            "logger=none",
            "data=builtin",
            f"data.img_size={img_size}",
            "data.num_train=2048",
            "data.num_val=512",
            "data.num_workers=8",
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
            raise SystemExit(f"the app failed with exit code {proc.returncode}")
        return json.loads(Path(tmp, "run", "results.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--skip-app", action="store_true", help="only the synthetic train step")
    a = p.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device=cuda: no CUDA device here; use --device cpu")
    card = torch.cuda.get_device_name() if a.device.startswith("cuda") else "CPU"
    common = dict(device=a.device, img_size=a.img_size, batch_size=a.batch_size, steps=a.steps)
    rows = [
        ("fp32 eager", train_step_speed(**common, bf16=False, channels_last=False, compile=False)),
        (
            "bf16 + channels_last" + ("" if a.no_compile else " + compile"),
            train_step_speed(**common, bf16=True, channels_last=True, compile=not a.no_compile),
        ),
    ]
    print(f"\nVAN-B0 training step, {a.img_size}x{a.img_size}, batch {a.batch_size}, {card}, "
          f"torch {torch.__version__}\n")  # fmt: skip
    print("| setting | train images/s | peak memory (GiB) |\n|---|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['images_per_sec']:.0f} | {r['peak_mem_gib']:.2f} |")
    if not a.skip_app:
        r = app_epoch(
            device=a.device, img_size=a.img_size, batch_size=a.batch_size, compile=not a.no_compile
        )
        e = r["epochs"][-1]
        print(f"\napp (python -m van_ablate, 1 epoch, built-in data at {a.img_size} px): "
              f"{e['images_per_sec']:.0f} train images/s, status {r['status']}, "
              f"device {r['setup']['device']}")  # fmt: skip


if __name__ == "__main__":
    main()
