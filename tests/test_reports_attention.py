"""What LKA looks at: attention maps per stage and Grad-CAM from real checkpoints of van_proxy."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from report_inputs import make_results, write_checkpoint, write_run

from van_ablate.analysis import attention
from van_ablate.data import builtin
from van_ablate.runs import load_run_model

ABLATIONS = ("baseline", "sigmoid", "no_pw_conv")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("att")
    dirs = []
    for i, ablation in enumerate(ABLATIONS):
        run = write_run(root / "runs", make_results(f"{ablation}-s0", ablation=ablation))
        write_checkpoint(run, seed=i, which="best")
        dirs.append(run)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 255, (72, 72, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i}.png")
    (images / "notes.txt").write_text("not an image")
    return dirs, images


def test_lka_maps_are_one_normalised_map_per_stage_at_the_stage_resolution(runs):
    torch.manual_seed(0)
    model = load_run_model(runs[0][1], which="best")  # sigmoid-gated LKA
    maps, logits = attention.lka_maps(model, torch.randn(2, 3, 64, 64))
    assert [m.shape for m in maps] == [(2, 16, 16), (2, 8, 8), (2, 4, 4), (2, 2, 2)]
    for m in maps:
        assert m.min() == pytest.approx(0.0) and m.max() == pytest.approx(1.0)
    assert logits.shape == (2, builtin.NUM_CLASSES)  # one logit per class of the run's data


def test_grad_cam_covers_the_input_for_the_predicted_class(runs):
    model = load_run_model(runs[0][0], which="best")
    cam = attention.grad_cam(model, torch.randn(2, 3, 64, 64))
    assert cam.shape == (2, 64, 64) and 0.0 <= cam.min() and cam.max() <= 1.0
    for m in cam:  # a map, not a blank: pytorch-grad-cam scales each non-zero map to [0, 1]
        assert m.max() == pytest.approx(1.0) and m.min() == pytest.approx(0.0)


SQUARE = 16  # one Grad-CAM cell of stage 3 at 64 px


def coloured_squares(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images of faint noise with one square, red (class 0) or green (class 1), anywhere; and
    the classes and the squares' top-left corners."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 3, 64, 64), generator=g) * 0.5 - 0.25
    y = torch.randint(0, 2, (n,), generator=g)
    corners = torch.randint(0, 64 - SQUARE + 1, (n, 2), generator=g)
    for i, (r, c) in enumerate(corners.tolist()):
        x[i, :, r : r + SQUARE, c : c + SQUARE] = -1.0
        x[i, y[i], r : r + SQUARE, c : c + SQUARE] = 2.0
    return x, y, corners


@pytest.fixture(scope="module")
def square_model():
    """van_proxy trained for 60 steps to tell a red square from a green one (about 6 s)."""
    torch.manual_seed(0)
    model = timm.create_model("van_proxy", num_classes=2)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(60):
        x, y, _ = coloured_squares(16, seed=step)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def test_grad_cam_is_highest_on_the_object_that_decides_the_class(square_model):
    x, y, corners = coloured_squares(16, seed=1000)
    with torch.no_grad():
        assert (square_model(x).argmax(1) == y).all()  # it has learnt the task
    maps, _ = attention.lka_maps(square_model, x)
    stage = attention.cam_stage(maps)
    assert stage == 3  # 4x4 at 64 px, as the attention command picks it
    cam = attention.grad_cam(square_model, x, stage)
    inside, outside = [], []
    for m, (r, c) in zip(cam, corners.tolist(), strict=True):
        assert m.max() == pytest.approx(1.0) and m.std() > 0.05  # signal, not a flat map
        on = np.zeros(m.shape, dtype=bool)
        on[r : r + SQUARE, c : c + SQUARE] = True
        inside.append(m[on].mean())
        outside.append(m[~on].mean())
    # The evidence is the square: Grad-CAM puts more weight on it than on the noise around it
    # (on average: a 4x4 map blurs the square over its neighbouring cells).
    assert np.mean(inside) > np.mean(outside) + 0.1
    assert np.mean(np.greater(inside, outside)) >= 0.75


def test_attention_command_writes_one_figure_per_image_and_a_page(runs, tmp_path):
    dirs, images = runs
    argv = [*map(str, dirs), "--images", "2", "--image-dir", str(images), "--out", str(tmp_path)]
    assert attention.main(argv) == 0
    for i in range(2):
        for fmt in ("png", "svg"):
            assert (tmp_path / f"attention_{i}.{fmt}").stat().st_size > 1000
    page = (tmp_path / "attention.html").read_text()
    assert page.count("data:image/png;base64,") == 2


def test_a_run_without_the_checkpoint_is_one_line_and_exit_2(runs, capsys, tmp_path):
    dirs, images = runs
    code = attention.main([str(dirs[0]), "--which", "last", "--image-dir", str(images)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "has no checkpoints/last.pt" in err


def test_images_default_to_the_runs_own_validation_split(tmp_path):
    results = make_results("b", ablation="baseline")
    results["config"]["data"].update(num_train=16, num_val=8, cache_dir=str(tmp_path / "cache"))
    run = write_run(tmp_path / "runs", results)
    write_checkpoint(run, which="last")
    argv = [str(run), "--which", "last", "--images", "3", "--out", str(tmp_path / "out")]
    assert attention.main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "attention_0.png", "attention_1.png", "attention_2.png",
    ]  # fmt: skip


def test_grad_cam_layer_is_the_deepest_stage_at_least_four_wide():
    maps = [np.zeros((1, s, s)) for s in (16, 8, 4, 2)]
    assert attention.cam_stage(maps) == 3
    assert attention.cam_stage([np.zeros((1, 2, 2))]) == 1


def test_figure_has_colorbars_and_puts_the_true_class_beside_the_predicted_one():
    maps = [np.random.default_rng(0).random((s, s)) for s in (16, 8)]
    rows = [("baseline s0", maps, np.zeros((64, 64)), 2), ("k7 s0", maps, np.zeros((64, 64)), 1)]
    fig = attention.attention_figure(
        rows, np.zeros((64, 64, 3)), true_class=1, class_names=["row", "column", "diagonal"]
    )
    cells, bars = fig.axes[:8], fig.axes[8:]
    assert [b.get_ylabel() for b in bars] == ["attention (per-image min-max)", "Grad-CAM"]
    assert cells[3].get_xlabel() == "pred diagonal\ntrue column ✗"
    assert cells[7].get_xlabel() == "pred column\ntrue column ✓"


def test_runs_are_chosen_by_ablation_name_and_seed(runs, tmp_path):
    dirs, images = runs
    root = dirs[0].parent
    assert attention.select_runs([root], ["no_pw_conv", "baseline"]) == [dirs[2], dirs[0]]
    out = tmp_path / "out"
    argv = [str(root), "--ablations", "sigmoid,baseline", "--image-dir", str(images)]
    assert attention.main([*argv, "--images", "1", "--out", str(out), "--no-svg"]) == 0
    assert (out / "attention_0.png").is_file()


def test_an_ablation_without_a_run_is_one_line_naming_it(runs, capsys):
    dirs, images = runs
    code = attention.main([str(dirs[0].parent), "--ablations", "k7", "--image-dir", str(images)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--ablations" in err and "k7" in err


def test_the_former_presets_flag_still_chooses_runs_but_is_not_listed(runs, tmp_path, capsys):
    dirs, images = runs
    out = tmp_path / "out"
    argv = [str(dirs[0].parent), "--presets", "baseline", "--image-dir", str(images)]
    assert attention.main([*argv, "--images", "1", "--out", str(out), "--no-svg"]) == 0
    assert (out / "attention_0.png").is_file()
    assert "--presets" not in attention._parser().format_help()


def test_images_of_the_validation_split_come_with_their_true_classes_and_names(tmp_path):
    data = {"num_train": 8, "num_val": 4, "cache_dir": str(tmp_path / "cache")}
    run = write_run(tmp_path / "runs", make_results("b", ablation="baseline", data=data))
    _, _, labels, names = attention.load_images(run, 3, None)
    assert names == list(builtin.CLASSES)
    _, val = builtin.load(8, 4, seed=0, cache_dir=tmp_path / "cache")
    assert labels == val.labels[:3].tolist()
