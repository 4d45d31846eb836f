"""Bad input by class, refused before training: sizes the network cannot take (an image under
the total stride, a kernel far wider than any feature map, a batch that cannot fit in memory),
non-finite numbers, and image folders without a readable image. Each ends in one line naming the
key and the value, exit 2, and no run directory; the real process is run once per case."""

from __future__ import annotations

import doctest
import math
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, run_app, run_env, run_main, write_image_folder
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.nodes import FloatNode
from torch import nn

import van_ablate.__main__  # noqa: F401  (registers the schema and the run-name resolver)
from van_ablate import checks
from van_ablate.config import Config, validate
from van_ablate.errors import EXIT_CONFIG, ConfigError
from van_ablate.model import lka, spec
from van_ablate.model.lka import LKASpec
from van_ablate.model.spec import STRIDES, ModelSpec, StepMemory, feature_sizes, step_memory
from van_ablate.paper.ablation import CONF_PACKAGE, ablation_names


def assert_refused(code: int, stderr: str, *fragments: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == EXIT_CONFIG, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "run").exists(), sorted(p.name for p in (tmp_path / "run").iterdir())
    assert not list(tmp_path.rglob("results.json")) and not list(tmp_path.rglob("checkpoints"))


def folder(root: Path, files: dict[str, bytes]) -> Path:
    """``root/{train,validation}/class_{0,1}/`` holding ``files`` (name -> bytes) each."""
    for split in ("train", "validation"):
        for c in range(2):
            (root / split / f"class_{c}").mkdir(parents=True)
            for name, data in files.items():
                (root / split / f"class_{c}" / name).write_bytes(data)
    return root


CASES = {
    # (a) sizes: an image so small that stage 4's embed gets a 1 x 1 map; a kernel far wider
    # than stage 1's 16 px map; a first batch of 256 images of 4096 px (about 1.1 TiB of
    # activations for van_proxy).
    "image_too_small_for_the_patch_embeds": (["data.img_size=16"], ["data.img_size=16", ">= 17"]),
    "kernel_far_wider_than_any_map": (
        ["data.img_size=64", "lka.kernel_size=201"],
        ["lka.kernel_size=201", "data.img_size=64", "kernel_size <= 62"],
    ),
    "batch_that_cannot_fit_in_memory": (
        ["data.img_size=4096", "train.batch_size=256"],
        ["data.img_size=4096", "train.batch_size=256", "TiB", "available on"],
    ),
    # (b) non-finite numbers.
    "lr_inf": (["train.lr=inf"], ["train.lr=inf", "finite number > 0"]),
    "lr_nan": (["train.lr=nan"], ["train.lr=nan", "finite number > 0"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_ends_in_one_line_and_exit_2_in_the_real_process(case, tmp_path):
    overrides, fragments = CASES[case]
    proc = run_app([*TINY_RUN, f"hydra.run.dir={tmp_path}/run", *overrides], tmp_path)
    assert_refused(proc.returncode, proc.stderr, *fragments)
    assert_nothing_written(tmp_path)


# (c) image folders whose class folders hold no readable image.
FOLDERS = {
    "empty_class_folders": ({}, ["2 class folder(s) and 0 file(s)"]),
    "only_0_byte_images": (
        {"0.png": b"", "1.jpg": b""},
        ["4 file(s), none readable", "4 of 4 images are 0 bytes"],
    ),
    "no_image_extension": ({"notes.txt": b"x"}, ["2 file(s), none named .png/.jpg/.jpeg"]),
}


@pytest.mark.parametrize("case", FOLDERS)
def test_a_folder_without_a_readable_image_is_refused_naming_it(case, tmp_path):
    files, fragments = FOLDERS[case]
    root = folder(tmp_path / "images", files)
    args = [*TINY_RUN, "data=imagefolder", f"data.root={root}", f"hydra.run.dir={tmp_path}/run"]
    proc = run_app(args, tmp_path, env=run_env())
    train = root / "train"
    assert_refused(proc.returncode, proc.stderr, f"data.root='{root}'", str(train), *fragments)
    assert_nothing_written(tmp_path)


def test_a_split_without_a_readable_image_is_refused_when_the_other_is_fine(tmp_path, capsys):
    root = write_image_folder(tmp_path / "images", classes=2, per_class=2)
    for path in (root / "validation").rglob("*.png"):
        path.write_bytes(b"")
    args = [*TINY_RUN, "data=imagefolder", f"data.root={root}", f"hydra.run.dir={tmp_path}/run"]
    code, err = run_main(args, capsys)
    assert_refused(code, err, "data.root=", str(root / "validation"), "none readable")
    assert_nothing_written(tmp_path)


def float_keys(node: DictConfig | None = None, prefix: str = "") -> dict[str, int]:
    """Every float key of the job's schema -> 0, or the length of a list of floats."""
    node = OmegaConf.structured(Config) if node is None else node
    found = {}
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            found |= float_keys(child, f"{prefix}{key}.")
        elif isinstance(child, FloatNode):
            found[f"{prefix}{key}"] = 0
        elif isinstance(child, ListConfig) and child._metadata.element_type is float:
            found[f"{prefix}{key}"] = len(STRIDES) if child._is_none() else len(child)
    return found


def test_the_float_keys_are_found_in_the_schema():
    keys = float_keys()
    assert {"train.lr", "train.clip_grad", "data.crop_pct", "model.drop_path_rate"} <= set(keys)
    assert (keys["data.mean"], keys["data.scale"], keys["model.mlp_ratios"]) == (3, 2, 4)


@pytest.mark.parametrize("bad", ["nan", "inf"])
@pytest.mark.parametrize("key", float_keys())
def test_every_float_key_refuses_nan_and_inf_naming_a_finite_range(key, bad, tmp_path, capsys):
    length = float_keys()[key]
    value = f"[{','.join(['1.0'] * (length - 1) + [bad])}]" if length else bad
    shown = bad if length else f"{key}={bad}"
    code, err = run_main([*TINY_RUN, f"hydra.run.dir={tmp_path}/run", f"{key}={value}"], capsys)
    assert_refused(code, err, key, shown)
    allowed = err.split(": ", 2)[-1]  # after "error: key=value: "
    assert "inf" not in allowed, err  # the allowed range is finite, and says so or is [a, b]
    assert "finite" in allowed or "must be in [" in allowed, err
    assert_nothing_written(tmp_path)


def test_finite_values_at_the_edges_of_the_ranges_pass():
    checks.in_range("train.weight_decay", 0.0, 0.0)
    checks.in_range("train.weight_decay", 1e300, 0.0)
    checks.above("train.lr", 1e-12, 0)
    with pytest.raises(
        ConfigError, match=r"^train.weight_decay=-1.0: must be a finite number >= 0"
    ):
        checks.in_range("train.weight_decay", -1.0, 0.0)


def compose_cfg(*overrides: str):
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("img_size", [28, 32, 64, 224])  # Fashion-MNIST, CIFAR, proxy, paper
@pytest.mark.parametrize("ablation", ablation_names())
def test_every_paper_row_stays_allowed_at_the_preset_sizes(ablation, img_size):
    overrides = (f"+ablation={ablation}", f"data.img_size={img_size}")
    validate(compose_cfg(*overrides), [ablation])


@pytest.mark.parametrize("img_size", [64, 224])
def test_the_kernel_size_grid_stays_allowed(img_size):
    for kernel_size in (7, 14, 21, 28, 35):
        for dilation in range(1, 6):
            lka_spec = LKASpec(kernel_size=kernel_size, dilation=dilation)
            ModelSpec("van_proxy", lka=lka_spec, img_size=img_size)


# At 64 px stage 1 is 16 px wide: a tap reaches the map within 2 x 16 - 1 = 31 px, and the widest
# conv may span twice that, 62 px. Pairs (allowed, refused) one step apart.
SPANS = {
    "dwd_conv": (LKASpec(kernel_size=66), LKASpec(kernel_size=70), "lka.kernel_size"),  # 61, 67
    "dense": (
        LKASpec(kernel_size=62, dense=True),
        LKASpec(kernel_size=63, dense=True),
        "lka.kernel_size",
    ),
    "dw_conv_only": (  # 2d - 1: 61, 63
        LKASpec(dilation=31, dwd_conv=False),
        LKASpec(dilation=32, dwd_conv=False),
        "lka.dilation",
    ),
}


@pytest.mark.parametrize("conv", SPANS)
def test_the_widest_conv_may_span_twice_the_reach_of_stage_1(conv):
    allowed, refused, key = SPANS[conv]
    ModelSpec("van_proxy", lka=allowed, img_size=64)
    with pytest.raises(ConfigError) as err:
        ModelSpec("van_proxy", lka=refused, img_size=64)
    assert err.value.key == key and "data.img_size=64" in str(err.value)
    assert "allowed: a span <= 62 px" in str(err.value)


def test_the_stride_rule_is_the_model_s_own():
    model = ModelSpec("van_proxy", img_size=64).build()
    reductions = [info["reduction"] for info in model.feature_info]
    assert reductions == [math.prod(STRIDES[: i + 1]) for i in range(len(STRIDES))]
    model.to("meta").eval()
    for img_size in (16, 17, 28, 32, 37, 50, 64, 224):
        maps = model.forward_intermediates(torch.empty(1, 3, img_size, img_size, device="meta"))[1]
        assert tuple(m.shape[-1] for m in maps) == feature_sizes(img_size), img_size
    assert (feature_sizes(16), feature_sizes(17)) == ((4, 2, 1, 1), (5, 3, 2, 1))
    small = LKASpec(kernel_size=7)  # the default K=21 spans 19 px, over the 18 allowed at 17 px
    ModelSpec("van_proxy", lka=small, img_size=17)
    with pytest.raises(ConfigError, match=r"^data.img_size=16: must be an integer >= 17"):
        ModelSpec("van_proxy", lka=small, img_size=16)  # stage 4's embed would get 1 x 1


def test_memory_of_one_conv_is_the_hand_computation():
    conv = nn.Conv2d(3, 8, 3, padding=1, device="meta")
    # Output 8 x 10 x 10 per image, 4 images, 4 bytes; 8 x 3 x 3 x 3 + 8 = 224 parameters kept
    # as weights, grads and AdamW's two moments, 4 bytes each.
    assert step_memory(conv, (3, 10, 10), 4) == StepMemory(8 * 10 * 10 * 4 * 4, 224 * 4 * 4)
    bf16 = step_memory(conv, (3, 10, 10), 4, activation_bytes=2, state_copies=5)
    assert bf16 == StepMemory(8 * 10 * 10 * 4 * 2, 224 * 5 * 4)


def test_memory_counts_every_module_output_once():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 8 x 5 x 5 outputs
        nn.BatchNorm2d(8),  # 8 x 5 x 5
        nn.Identity(),  # returns its input: not counted again
        nn.Dropout(0.5),  # returns its input in eval mode, where the count runs: not again
        nn.GELU(),  # 8 x 5 x 5
    ).to("meta")
    model.train()
    memory = step_memory(model, (3, 10, 10), batch_size=2)
    assert memory.activations == 3 * 200 * 2 * 4
    assert memory.states == ((8 * 27 + 8) + (8 + 8)) * 4 * 4  # BatchNorm's running stats: buffers
    assert model.training  # the caller's mode is given back


def test_memory_estimate_of_van_is_a_little_below_what_autograd_keeps():
    model_spec = ModelSpec("van_proxy", num_classes=10, img_size=32)
    estimate = model_spec.step_memory(batch_size=2)
    model = model_spec.build().train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}  # storage -> bytes, of the tensors saved for backward

    def keep(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in weights:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        model(torch.randn(2, 3, 32, 32))
    # 0.86 of it when written: elementwise products and sums are not module outputs.
    assert 0.7 * sum(saved.values()) < estimate.activations < sum(saved.values())


def test_memory_estimate_leaves_the_rng_and_allocates_no_activation():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    memory = ModelSpec("van_proxy", img_size=4096).step_memory(256)
    assert memory.activations > 2**40  # over 1 TiB, counted without allocating it
    assert torch.equal(torch.rand(3), expected)


def test_available_memory_on_cpu_is_the_kernel_s_figure():
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        assert checks.available_memory("cpu") is None
        return
    total = int(
        next(x for x in meminfo.read_text().splitlines() if x.startswith("MemTotal:")).split()[1]
    )
    assert 0 < checks.available_memory("cpu") <= total * 1024


@pytest.mark.parametrize("module", [checks, lka, spec], ids=lambda m: m.__name__)
def test_the_examples_in_the_docstrings_hold(module):
    assert doctest.testmod(module).failed == 0
