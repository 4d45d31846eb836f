"""Throughput of a VAN with any LKA: forward and forward+backward images/s on this device.

The paper reports inference throughput of VAN-B0..B4 (RTX 3090, images/s). This command
measures a model and spec on the current device, optionally in channels_last, under
torch.compile or bf16 autocast, and compares the switchable LKA against the official code's
straight-line one (three convs and a product, same weights)::

    python -m van_ablate.bench --model van_b0 --img-size 224 --batch-size 32 --compare

Each figure is the median (and min-max) over ``--repeats`` timed blocks of ``--iters`` steps
after ``--warmup`` steps; forward runs in eval mode under ``torch.no_grad``, forward+backward in
train mode. With ``--compare`` the two LKAs alternate block by block, so drift in a shared
machine's load hits both alike. Progress (the warm-up, each timed block) goes to stderr as it
happens; the table or JSON to stdout. Threads default to the CPUs this process may use
(:mod:`van_ablate.train.hardware`).
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from van_ablate import checks
from van_ablate.cli_args import OneLineParser, add_model_arguments, model_from_args
from van_ablate.errors import EXIT_CONFIG, ConfigError
from van_ablate.model.lka import LKA, LKASpec
from van_ablate.train.hardware import configure_threads, describe

__all__ = ["StraightLKA", "benchmark", "main", "to_straight_line"]

# The autocast dtype of each precision, named as `train.precision` names it (fp16: benchmarks only).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class StraightLKA(nn.Module):
    """The official code's ``LKA``: DW-Conv, DW-D-Conv, 1x1 conv, product with the input.

    Copied as the speed baseline minus the official ``u = x.clone()``: the product needs no
    copy, and without it the baseline is the fastest straight line, a stricter comparison.
    """

    def __init__(self, dim: int, dw_kernel: int = 5, dwd_kernel: int = 7, dilation: int = 3):
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, dw_kernel, padding=dw_kernel // 2, groups=dim)
        self.conv_spatial = nn.Conv2d(
            dim,
            dim,
            dwd_kernel,
            stride=1,
            padding=dilation * (dwd_kernel - 1) // 2,
            groups=dim,
            dilation=dilation,
        )
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.conv0(x)
        attn = self.conv_spatial(attn)
        attn = self.conv1(attn)
        return x * attn


def to_straight_line(model: nn.Module) -> nn.Module:
    """Replace every :class:`~van_ablate.model.lka.LKA` in ``model`` by a :class:`StraightLKA`
    holding the same weights (in place); only specs that are three convs and a product.

    >>> import timm, van_ablate
    >>> m = to_straight_line(timm.create_model("van_proxy"))
    >>> type(m.block1[0].attn.spatial_gating_unit).__name__
    'StraightLKA'
    """
    for name, module in list(model.named_modules()):
        if not isinstance(module, LKA):
            continue
        spec = module.spec
        straight = LKASpec(kernel_size=spec.kernel_size, dilation=spec.dilation)
        if spec != straight or spec.resolved_dilation * (spec.dwd_kernel - 1) % 2:
            raise ConfigError(
                "straight_line",
                True,
                "needs an LKA of three convs and a product with symmetric padding: leave "
                "every lka switch at its default (kernel_size and dilation may change)",
            )
        dim = module.conv1.in_channels
        new = StraightLKA(dim, spec.dw_kernel, spec.dwd_kernel, spec.resolved_dilation)
        new.load_state_dict(module.state_dict())
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, new.to(module.conv1.weight.device))
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def _time_blocks(
    steps: dict[str, Callable[[], None]],
    *,
    phase: str,
    batch_size: int,
    warmup: int,
    iters: int,
    repeats: int,
    device: torch.device,
    say: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    # torch.utils.benchmark times one statement; here candidates alternate block by block and
    # peak memory is read around the same blocks, so a short loop is clearer than bending it.
    for name, step in steps.items():
        if warmup:
            say(f"{phase}: {name}: warm-up, {warmup} step(s) of {batch_size} images")
            started = time.perf_counter()
            for _ in range(warmup):
                step()
            _sync(device)
            say(f"{phase}: {name}: warm-up done in {time.perf_counter() - started:.1f} s")
    rates: dict[str, list[float]] = {name: [] for name in steps}
    peaks: dict[str, float | None] = {name: None for name in steps}
    for block in range(repeats):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            for _ in range(iters):
                step()
            _sync(device)
            elapsed = time.perf_counter() - start
            rates[name].append(batch_size * iters / elapsed)
            peak = _peak_mib(device)
            peaks[name] = peak if peaks[name] is None else max(peaks[name], peak)
            say(
                f"{phase}: {name}: block {block + 1}/{repeats}: {rates[name][-1]:.1f} img/s "
                f"({iters} steps in {elapsed:.1f} s)"
            )
    return {
        name: {
            "median": statistics.median(r),
            "min": min(r),
            "max": max(r),
            "peak_mib": peaks[name],
        }
        for name, r in rates.items()
    }


def _quiet(message: str) -> None:
    pass


def benchmark(
    models: dict[str, nn.Module],
    *,
    batch_size: int = 32,
    img_size: int = 224,
    in_chans: int = 3,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    compile: bool = False,
    precision: str = "fp32",
    warmup: int = 2,
    iters: int = 5,
    repeats: int = 3,
    say: Callable[[str], None] = _quiet,
) -> dict[str, dict[str, Any]]:
    """Forward and forward+backward images/s of each model (name -> model), interleaved;
    ``say`` hears what is being timed as it goes (warm-up, each timed block).

    Returns ``{name: {"forward": {...}, "train": {...}}}`` where each inner dict holds the
    ``median``, ``min`` and ``max`` images/s over the repeats and ``peak_mib`` (CUDA only).
    """
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch_size, in_chans, img_size, img_size, device=device)
    x = x.contiguous(memory_format=memory_format)
    dtype = PRECISIONS[precision]
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext
    runs = {}
    for name, model in models.items():
        model.to(device=device, memory_format=memory_format)
        runs[name] = (model, torch.compile(model) if compile else model)

    def forward(run: nn.Module) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad(), autocast():
                run(x)

        return step

    def train(model: nn.Module, run: nn.Module) -> Callable[[], None]:
        def step() -> None:
            with autocast():
                loss = run(x).float().mean()
            loss.backward()
            model.zero_grad(set_to_none=True)

        return step

    timing = dict(
        batch_size=batch_size, warmup=warmup, iters=iters, repeats=repeats, device=device, say=say
    )
    for model, _ in runs.values():
        model.eval()
    fwd = _time_blocks({n: forward(run) for n, (_, run) in runs.items()}, phase="forward", **timing)
    for model, _ in runs.values():
        model.train()
    steps = {n: train(m, run) for n, (m, run) in runs.items()}
    bwd = _time_blocks(steps, phase="fwd+bwd", **timing)
    return {name: {"forward": fwd[name], "train": bwd[name]} for name in models}


def _records(results: dict[str, dict[str, Any]], setting: dict[str, Any]) -> list[dict]:
    return [
        {
            **setting,
            "lka_impl": name,
            "forward_img_s": r["forward"]["median"],
            "forward_img_s_min": r["forward"]["min"],
            "forward_img_s_max": r["forward"]["max"],
            "train_img_s": r["train"]["median"],
            "train_img_s_min": r["train"]["min"],
            "train_img_s_max": r["train"]["max"],
            "forward_peak_mib": r["forward"]["peak_mib"],
            "train_peak_mib": r["train"]["peak_mib"],
        }
        for name, r in results.items()
    ]


def _markdown(records: list[dict[str, Any]]) -> str:
    import pandas as pd

    cuda = records[0]["device"].startswith("cuda")
    rows = []
    for r in records:
        row = {
            "model": r["model"],
            "LKA": r["lka_impl"],
            "device": r["device"],
            "batch": r["batch_size"],
            "img": r["img_size"],
            "channels_last": r["channels_last"],
            "compile": r["compile"],
            "precision": r["precision"],
            "forward img/s": _spread(r, "forward_img_s"),
            "fwd+bwd img/s": _spread(r, "train_img_s"),
        }
        if cuda:
            row["fwd peak MiB"] = f"{r['forward_peak_mib']:.0f}"
            row["fwd+bwd peak MiB"] = f"{r['train_peak_mib']:.0f}"
        rows.append(row)
    table = pd.DataFrame(rows)
    r = records[0]
    note = (
        f"Median of {r['repeats']} blocks of {r['iters']} steps after {r['warmup']} warmup "
        f"steps (min-max in brackets); torch {r['torch']}, {r['threads']} CPU threads of "
        f"{r['cpus_available']} available, OMP_WAIT_POLICY={r['wait_policy']}."
    )
    return table.to_markdown(index=False, disable_numparse=True) + "\n\n" + note


def _spread(record: dict[str, Any], key: str) -> str:
    return f"{record[key]:.1f} ({record[key + '_min']:.1f}-{record[key + '_max']:.1f})"


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m van_ablate.bench``: images/s of one model/spec, or both LKAs side by side."""
    parser = OneLineParser(
        prog="python -m van_ablate.bench",
        description="Forward and forward+backward images/s of a VAN with any LKA.",
    )
    add_model_arguments(parser, model="van_b0", arch=False)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32")
    parser.add_argument(
        "--amp", choices=("none", "bf16", "fp16"), help="older name of --precision (none: fp32)"
    )
    impl = parser.add_mutually_exclusive_group()
    impl.add_argument(
        "--straight-line", action="store_true", help="time the official straight-line LKA"
    )
    impl.add_argument(
        "--compare", action="store_true", help="time both LKAs, alternating block by block"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--iters", type=int, default=5, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks; median reported")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: the CPUs this process may use)"
    )
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")
    args = parser.parse_args(argv)
    if args.amp is not None:
        args.precision = "fp32" if args.amp == "none" else args.amp
    try:
        spec = model_from_args(args)
        for key in ("batch_size", "iters", "repeats"):
            checks.at_least(key, getattr(args, key), 1)
        checks.at_least("warmup", args.warmup, 0)
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device", "cuda", "CUDA is not available here; use cpu")
        if args.threads is not None:
            checks.at_least("threads", args.threads, 1)
            torch.set_num_threads(args.threads)
        else:
            configure_threads(os.environ)
        models = _build(spec.name, spec.lka, straight=args.straight_line, compare=args.compare)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    machine = describe(channels_last=args.channels_last)
    _say(
        f"{spec.name} at {spec.img_size} px, batch {args.batch_size}, on {device}, "
        f"{machine['threads']} thread(s) of {machine['cpus_available']} CPU(s), "
        f"{' and '.join(models)} LKA; {args.repeats} timed block(s) of {args.iters} step(s) "
        "after the warm-up, forward then fwd+bwd"
        + ("; torch.compile compiles during the warm-up" if args.compile else "")
    )
    results = benchmark(
        models,
        batch_size=args.batch_size,
        img_size=spec.img_size,
        device=device,
        channels_last=args.channels_last,
        compile=args.compile,
        precision=args.precision,
        warmup=args.warmup,
        iters=args.iters,
        repeats=args.repeats,
        say=_say,
    )
    setting = {
        "model": spec.name,
        "lka": spec.lka.to_dict(),
        "device": str(torch.device(device)),
        "batch_size": args.batch_size,
        "img_size": spec.img_size,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "precision": args.precision,
        "warmup": args.warmup,
        "iters": args.iters,
        "repeats": args.repeats,
        "threads": machine["threads"],
        "cpus_available": machine["cpus_available"],
        "wait_policy": machine["wait_policy"],
        "torch": torch.__version__,
    }
    records = _records(results, setting)
    if args.format == "json":
        import json

        print(json.dumps(records, indent=2))
    else:
        print(_markdown(records))
    return 0


def _build(
    model_name: str, spec: LKASpec, *, straight: bool, compare: bool
) -> dict[str, nn.Module]:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(model_name, lka=spec)
    if straight:
        return {"straight-line": to_straight_line(model)}
    if compare:
        return {"switchable": model, "straight-line": to_straight_line(copy.deepcopy(model))}
    return {"switchable": model}


if __name__ == "__main__":
    sys.exit(main())
