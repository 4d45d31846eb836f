"""What LKA looks at: per-stage attention maps and a Grad-CAM of the prediction, across runs.

For trained runs (their checkpoints, rebuilt by :func:`van_ablate.runs.load_run_model`) and a few
images, one figure per image: a row per run (ablation), the input, the attention of the last LKA
(``spatial_gating_unit``) of every stage, and the Grad-CAM (pytorch-grad-cam) of the predicted
class on the last block of the deepest stage at least 4x4 wide (the last stage at 224 px), as the
paper compares Grad-CAM maps of its models (Sec. 4.4)::

    python -m van_ablate.analysis.attention runs/van_proxy/baseline-s0 runs/van_proxy/k7-s0 \
        --images 4
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from pytorch_grad_cam import GradCAM
from torch import nn

from van_ablate.analysis import figures, render
from van_ablate.errors import EXIT_CONFIG, ConfigError
from van_ablate.io import atomic_write_text
from van_ablate.model.lka import LKA

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


def lka_maps(model: nn.Module, images: torch.Tensor) -> tuple[list[np.ndarray], torch.Tensor]:
    """Attention of each stage's last LKA, as (N, h, w) maps in [0, 1]; and the logits.

    The map is the mean absolute attention over channels (after the gate when there is one),
    normalised per image: the weight LKA puts on each position before it multiplies the input.
    """
    stages = [
        getattr(model, f"block{i + 1}")[-1].attn.spatial_gating_unit
        for i in range(model.num_stages)
    ]
    maps: list[torch.Tensor] = []
    hooks = [_last_conv(lka).register_forward_hook(_keep(lka, maps)) for lka in stages]
    try:
        with torch.no_grad():
            logits = model(images)
    finally:
        for h in hooks:
            h.remove()
    return [_normalise(m.abs().mean(1)).numpy() for m in maps], logits


def grad_cam(model: nn.Module, images: torch.Tensor, stage: int | None = None) -> np.ndarray:
    """Grad-CAM of the predicted class on the last block of ``stage`` (1-based; default the
    last stage), as (N, H, W) maps in [0, 1] at the input's size."""
    target = getattr(model, f"block{stage or model.num_stages}")[-1]
    with GradCAM(model=model, target_layers=[target]) as cam:
        return cam(input_tensor=images, targets=None)


def cam_stage(maps: Sequence[np.ndarray], min_side: int = 4) -> int:
    """The deepest stage (1-based) whose maps are at least ``min_side`` wide: at proxy sizes the
    last stage is 1x1 or 2x2, where a Grad-CAM cannot say where anything is.

    >>> cam_stage([np.zeros((1, 8, 8)), np.zeros((1, 4, 4)), np.zeros((1, 2, 2))])
    2
    """
    wide = [i for i, m in enumerate(maps) if min(m.shape[1:]) >= min_side]
    return (wide[-1] if wide else len(maps) - 1) + 1


def attention_figure(
    rows: Sequence[tuple[str, list[np.ndarray], np.ndarray, int]],
    image: np.ndarray,
    cam_title: str = "Grad-CAM",
    true_class: int | None = None,
    class_names: Sequence[str] = (),
) -> Figure:
    """One image: per row (label, stage maps, Grad-CAM, predicted class) the maps side by side,
    with one colorbar per map kind and the predicted class beside the true one (when known)."""
    n_stages = len(rows[0][1])
    fig, axes = plt.subplots(
        len(rows), n_stages + 2, figsize=(1.9 * (n_stages + 2) + 1.2, 2.0 * len(rows) + 0.3),
        squeeze=False,
    )  # fmt: skip
    name = (lambda c: class_names[c] if c < len(class_names) else str(c)) if class_names else str
    for r, (label, maps, cam, pred) in enumerate(rows):
        axes[r, 0].imshow(image)
        axes[r, 0].set_ylabel(label, fontsize=8)
        for s, m in enumerate(maps):
            att = axes[r, s + 1].imshow(m, cmap="viridis", vmin=0, vmax=1)
        axes[r, -1].imshow(image)
        heat = axes[r, -1].imshow(cam, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        caption = f"pred {name(pred)}"
        if true_class is not None:
            caption += f"\ntrue {name(true_class)}" + (" ✓" if pred == true_class else " ✗")
        axes[r, -1].set_xlabel(caption, fontsize=8)
    titles = ["input", *(f"LKA stage {s + 1}" for s in range(n_stages)), cam_title]
    for c, title in enumerate(titles):
        axes[0, c].set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(att, ax=axes[:, 1:-1], shrink=0.8, label="attention (per-image min-max)")
    fig.colorbar(heat, ax=axes[:, -1], shrink=0.8, label="Grad-CAM")
    fig.set_layout_engine("constrained")
    return fig


def load_images(
    run_dir: Path, n: int, image_dir: Path | None
) -> tuple[torch.Tensor, np.ndarray, list[int] | None, list[str]]:
    """``n`` images as the run's model sees them (its eval transforms) and as RGB for display;
    their true classes and the class names where the images come with labels.

    From ``image_dir`` (sorted image files, no labels) when given, else the first ``n`` of the
    run's own validation split (its data config in results.json).
    """
    from timm.data import create_transform

    from van_ablate.data.loaders import DataConfig, build_loaders

    config = json.loads((run_dir / "results.json").read_text())["config"]
    data = DataConfig(**config["data"])
    if image_dir is None:
        _, val, _ = build_loaders(data, batch_size=n, eval_batch_size=n, seed=config["seed"])
        val.set_epoch(0)
        batch, labels = (t[:n] for t in next(iter(val)))
        labels = labels.tolist()
        names = _class_names(val.dataset)
    else:
        labels, names = None, []
        from PIL import Image

        files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:n]
        if not files:
            raise ConfigError("--image-dir", str(image_dir), "holds no image files")
        transform = create_transform(
            input_size=(3, data.img_size, data.img_size),
            interpolation=data.interpolation,
            mean=tuple(data.mean),
            std=tuple(data.std),
            crop_pct=data.crop_pct,
        )
        batch = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
    mean, std = torch.tensor(data.mean)[:, None, None], torch.tensor(data.std)[:, None, None]
    rgb = (batch * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return batch, rgb, labels, names


def _class_names(dataset) -> list[str]:
    """The dataset's class names, through the wrappers around it (ours, timm's); else none."""
    for _ in range(4):
        if getattr(dataset, "classes", None):
            return [str(c) for c in dataset.classes]
        dataset = getattr(dataset, "dataset", None)
    return []


def select_runs(folders: Sequence[Path], ablations: Sequence[str], seed: int = 0) -> list[Path]:
    """The run directory of each ablation (``baseline``, ``k7``, ``no_sigmoid+k7``) with ``seed``,
    in the order given, from the completed runs under ``folders``; the first found if several.
    """
    from van_ablate.analysis.collect import load_runs

    runs = load_runs(folders).runs
    runs = runs[(runs["status"] == "completed") & (runs["seed"] == seed)]
    chosen = []
    for ablation in ablations:
        hits = runs[runs["ablations"] == ablation]["path"]
        if hits.empty:
            known = ", ".join(sorted(set(runs["ablations"]))) or "none"
            allowed = f"no completed run with seed {seed} under the folders given (there: {known})"
            raise ConfigError("--ablations", ablation, allowed)
        chosen.append(Path(hits.iloc[0]).parent)
    return chosen


def run_label(run_dir: Path) -> str:
    """The run's ablations and seed (``k7 s0``), else its folder name."""
    try:
        results = json.loads((run_dir / "results.json").read_text())
        return f"{'+'.join(results['ablations']) or 'default'} s{results['seed']}"
    except (OSError, ValueError, KeyError):
        return run_dir.name


def _last_conv(lka: LKA) -> nn.Module:
    return next(c for c in (lka.conv1, lka.conv_spatial, lka.conv0) if c is not None)


def _keep(lka: LKA, out: list[torch.Tensor]):
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        out.append(output.sigmoid() if lka.sigmoid else output)

    return hook


def _normalise(m: torch.Tensor) -> torch.Tensor:
    flat = m.flatten(1)
    lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    return (m - lo) / (hi - lo).clamp_min(1e-12)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m van_ablate.analysis.attention",
        description="LKA attention maps per stage and Grad-CAM, side by side across runs.",
    )
    p.add_argument(
        "runs", nargs="+", help="run directories with checkpoints/, or with --ablations, folders"
    )
    p.add_argument(
        "--ablations",
        help="comma list of ablations (baseline,k7): one run each, found under the folders given",
    )
    # The flag's name before ablations had one name; kept for the commands people already have.
    p.add_argument("--presets", dest="ablations", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help="with --ablations: the seed (default 0)")
    p.add_argument("--images", type=int, default=4, help="how many images (default 4)")
    p.add_argument("--image-dir", help="images to use (default: the first run's val split)")
    p.add_argument("--which", default="best", help="checkpoint: best or last (default best)")
    p.add_argument("--out", default="reports/attention", help="output folder")
    p.add_argument("--no-svg", action="store_true", help="figures as PNG only (default +SVG)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one figure per image plus ``attention.html``; exit 2 on bad input."""
    args = _parser().parse_args(argv)
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    try:
        paths = _run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"wrote {len(paths)} files to {args.out}")
    return 0


def _run(args: argparse.Namespace) -> list[Path]:
    from van_ablate.runs import load_run_model

    if args.images < 1:
        raise ConfigError("--images", args.images, "must be an integer >= 1")
    if args.which not in ("best", "last"):
        raise ConfigError("--which", args.which, "must be best or last")
    image_dir = Path(args.image_dir) if args.image_dir else None
    if image_dir is not None and not image_dir.is_dir():
        raise ConfigError("--image-dir", args.image_dir, "no such folder")
    runs = [Path(r) for r in args.runs]
    if args.ablations:
        runs = select_runs(runs, [p.strip() for p in args.ablations.split(",")], args.seed)
    for run in runs:
        if not (run / "checkpoints" / f"{args.which}.pt").is_file():
            raise ConfigError("runs", str(run), f"has no checkpoints/{args.which}.pt")
    batch, rgb, labels, names = load_images(runs[0], args.images, image_dir)
    formats = ("png",) if args.no_svg else figures.FORMATS
    per_run, stage = [], None
    for run in runs:
        model = load_run_model(run, which=args.which)
        maps, logits = lka_maps(model, batch)
        stage = stage or cam_stage(maps)  # the first run's, so every row is the same layer
        cam = grad_cam(model, batch, stage)
        per_run.append((run_label(run), maps, cam, logits.argmax(1).tolist()))
    out = Path(args.out)
    written, pngs = [], []
    for i in range(len(batch)):
        rows = [
            (label, [m[i] for m in maps], cam[i], pred[i]) for label, maps, cam, pred in per_run
        ]
        true = labels[i] if labels is not None else None
        fig = attention_figure(rows, rgb[i], f"Grad-CAM (stage {stage} block)", true, names)
        saved = figures.save(fig, out, f"attention_{i}", formats)
        written += saved
        pngs += [p for p in saved if p.suffix == ".png"]
    notes = [f"Runs: {', '.join(map(render.relative, runs))} ({args.which} checkpoints)."]
    page = render.html_page("What LKA looks at", {}, pngs, notes=notes)
    written.append(atomic_write_text(out / "attention.html", page))
    return written


if __name__ == "__main__":
    sys.exit(main())
