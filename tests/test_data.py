"""Loaders through timm: the built-in dataset, image folders, CIFAR on disk, config checks."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_app, write_image_folder
from omegaconf import OmegaConf
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100

from van_ablate.config import CONF_PACKAGE
from van_ablate.data import builtin, fashion_mnist
from van_ablate.data.loaders import DataConfig, build_loaders
from van_ablate.errors import ConfigError

CONF = resources.files(CONF_PACKAGE) / "data"


def tiny_builtin(tmp_path: Path, **kw) -> DataConfig:
    return DataConfig(num_train=48, num_val=16, cache_dir=str(tmp_path / "cache"), **kw)


def first_batches(loader, epoch: int, n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == n:
            break
    return batches


# --- the built-in dataset ---------------------------------------------------------------------


def test_builtin_dots_mostly_repeat_under_their_label_shift_and_not_under_the_others():
    images, labels = builtin.generate(64, seed=3)
    dots = images[:, :: builtin.CELL, :: builtin.CELL]  # top-left pixel of each dot
    assert dots.shape[1:3] == (16, 16)
    kept = (1 - builtin.NOISE) ** 2  # neither dot of a pair drawn afresh
    expected = kept + (1 - kept) / 4  # fresh dots still match 1 time in 4
    agree = np.zeros((len(labels), 4))
    for n, img in enumerate(dots):
        for k, (dy, dx) in enumerate(builtin.SHIFTS):
            a = img[dy:, max(dx, 0) : 16 + min(dx, 0)]
            b = img[: 16 - dy, max(-dx, 0) : 16 - max(dx, 0)]
            agree[n, k] = (a == b).all(axis=-1).mean()
    own = agree[np.arange(len(labels)), labels]
    others = agree[np.arange(4) != labels[:, None]]
    assert abs(own.mean() - expected) < 0.03 and abs(others.mean() - 0.25) < 0.03
    assert (agree.argmax(axis=1) == labels).all()
    assert set(labels.tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("generate", ["generate", "generate_v2", "generate_v3"])
def test_builtin_generation_is_a_function_of_the_seed(generate):
    generate = getattr(builtin, generate)
    a, la = generate(16, seed=1)
    b, lb = generate(16, seed=1)
    c, _ = generate(16, seed=2)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)


def _v2_cells(images):
    """Per cell: (vertical bar?, colour of the bar) read back from the pixels."""
    n, size = len(images), builtin.IMG_SIZE // builtin.CELL
    blocks = images.reshape(n, size, builtin.CELL, size, builtin.CELL, 3)
    blocks = blocks.transpose(0, 1, 3, 2, 4, 5)  # N x grid x grid x CELL x CELL x 3
    lit = (blocks != builtin.BACKGROUND).any(-1)
    horizontal, vertical = builtin.BAR, builtin.BAR.T
    assert ((lit == horizontal) | (lit == vertical)).all(axis=(-1, -2)).all()  # one 3 px bar each
    is_vertical = (lit == vertical).all(axis=(-1, -2))
    colour = blocks[:, :, :, 1, 1]  # the pixel both bars share
    return is_vertical, colour


def test_builtin_v2_every_cell_is_a_bar_coloured_as_cue_or_distractor_by_its_channels():
    images, _ = builtin.generate_v2(64, seed=3)
    _, colour = _v2_cells(images)
    cue = colour[..., 0] == colour[..., 1]  # red equals green
    assert abs(cue.mean() - builtin.CUE_FRACTION) < 0.03
    bright_red = colour[..., 0] > 150
    # each channel alone is bright as often in cues as in distractors: only their mix tells
    assert abs(bright_red[cue].mean() - bright_red[~cue].mean()) < 0.03
    kinds = {tuple(c) for c in colour.reshape(-1, 3).tolist()}
    allowed = builtin.CUE_COLOURS.tolist() + builtin.DISTRACTOR_COLOURS.tolist()
    assert kinds == {tuple(c) for c in allowed}


def _pairs(symbol, keep, shift):
    """(pairs one shift apart, both kept, with the same symbol; such pairs) of one image."""
    dy, dx = shift
    g = symbol.shape[-1]
    a = (slice(dy, None), slice(max(dx, 0), g + min(dx, 0)))
    b = (slice(0, g - dy), slice(max(-dx, 0), g - max(dx, 0)))
    both = keep[a] & keep[b]
    return np.array([((symbol[a] == symbol[b]) & both).sum(), both.sum()])


def _rate(pairs):
    return pairs[0] / max(pairs[1], 1)


def _agreement(symbol, keep, shift):
    """Fraction of cell pairs one shift apart, both kept, whose symbols are the same."""
    return _rate(_pairs(symbol, keep, shift))


def test_builtin_v2_cue_bars_repeat_under_the_label_shift_and_distractors_under_another():
    images, labels = builtin.generate_v2(64, seed=4)
    is_vertical, colour = _v2_cells(images)
    cue = colour[..., 0] == colour[..., 1]
    kept = (1 - builtin.NOISE) ** 2
    expected = kept + (1 - kept) / 2  # redrawn bars still match half the time
    own, other, decoy_own, decoy_best = [], [], [], []
    for n, label in enumerate(labels):
        agree = [_agreement(is_vertical[n], cue[n], s) for s in builtin.SHIFTS]
        own.append(agree[label])
        other += [a for k, a in enumerate(agree) if k != label]
        decoys = [_agreement(is_vertical[n], ~cue[n], s) for s in builtin.SHIFTS]
        decoy_own.append(decoys[label])
        decoy_best.append(max(a for k, a in enumerate(decoys) if k != label))
    assert abs(np.mean(own) - expected) < 0.05 and abs(np.mean(other) - 0.5) < 0.05
    # the distractors repeat as strongly, along another direction, never the label's
    assert abs(np.mean(decoy_own) - 0.5) < 0.05
    assert abs(np.mean(decoy_best) - expected) < 0.06
    assert set(labels.tolist()) == {0, 1, 2, 3}


def _v3_cells(images):
    """Per cell: (cue?, index of its colour in the palette) read back from the pixels."""
    is_vertical, colour = _v2_cells(images)
    palette = builtin.PALETTE
    matches = (colour[..., None, :] == palette).all(-1)  # N x grid x grid x len(PALETTE)
    assert (matches.sum(-1) == 1).all()  # every bar has exactly one of the palette's colours
    return ~is_vertical, matches.argmax(-1)


def test_builtin_v3_every_cell_is_a_palette_bar_whose_orientation_is_its_role():
    images, _ = builtin.generate_v3(64, seed=3)
    cue, symbol = _v3_cells(images)
    assert abs(cue.mean() - builtin.CUE_FRACTION_V3) < 0.03
    # the role is the bar's shape alone: each colour is as common among cues as distractors
    for k in range(len(builtin.PALETTE)):
        assert abs((symbol[cue] == k).mean() - (symbol[~cue] == k).mean()) < 0.03
    # and no single channel names the colour: two palette colours share each bright channel
    bright = builtin.PALETTE > 150
    assert (bright[:, :2].sum(0) == 2).all()


def test_builtin_v3_cue_colours_repeat_under_the_label_shift_and_distractors_under_another():
    images, labels = builtin.generate_v3(64, seed=4)
    cue, symbol = _v3_cells(images)
    chance = 1 / len(builtin.PALETTE)
    kept = (1 - builtin.NOISE_V3) ** 2
    expected = kept + (1 - kept) * chance  # redrawn colours still match by chance
    own, other = [], []
    decoy_own, decoy_best = np.zeros(2), np.zeros(2)  # (pairs that match, pairs), pooled
    for n, label in enumerate(labels):
        agree = [_agreement(symbol[n], cue[n], s) for s in builtin.SHIFTS]
        own.append(agree[label])
        other += [a for k, a in enumerate(agree) if k != label]
        # distractors are few: pool their pairs over images rather than average per image
        decoys = [_pairs(symbol[n], ~cue[n], s) for s in builtin.SHIFTS]
        decoy_own += decoys[label]
        decoy_best += max((d for k, d in enumerate(decoys) if k != label), key=_rate)
    assert abs(np.mean(own) - expected) < 0.05 and abs(np.mean(other) - chance) < 0.05
    # the distractors repeat too, along another direction, never the label's
    assert abs(_rate(decoy_own) - chance) < 0.08
    assert _rate(decoy_best) > expected - 0.1
    assert set(labels.tolist()) == {0, 1, 2, 3}


def served_images(loader) -> np.ndarray:
    """The generated images behind a built-in loader (under timm's and our sample wrappers)."""
    dataset = loader.dataset
    while not isinstance(dataset, builtin.BuiltinDataset):
        dataset = dataset.dataset
    return dataset.images


def test_builtin_tasks_are_chosen_by_data_name_and_cached_apart_in_one_folder(tmp_path):
    generators = {"builtin_v1": builtin.generate, "builtin_v2": builtin.generate_v2,
                  "builtin_v3": builtin.generate_v3}  # fmt: skip
    # One cache folder for all: the second round reads what the first one cached.
    for name in [*generators, *generators]:
        cfg = dataclasses.replace(tiny_builtin(tmp_path), name=name)
        train, val, info = build_loaders(cfg, batch_size=8, eval_batch_size=16, seed=0)
        assert (info.name, info.num_classes) == (name, 4)
        assert np.array_equal(served_images(train), generators[name](48, seed=0)[0]), name
        assert np.array_equal(served_images(val), generators[name](16, seed=1)[0]), name
    assert len(list((tmp_path / "cache").glob("*.npz"))) == len(generators)


def test_builtin_is_cached_and_reloaded_from_the_cache(tmp_path):
    train, val = builtin.load(12, 4, seed=5, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("*.npz")
    stamp = cached.stat().st_mtime_ns
    train2, _ = builtin.load(12, 4, seed=5, cache_dir=tmp_path)
    assert cached.stat().st_mtime_ns == stamp
    assert np.array_equal(train.images, train2.images)
    assert (len(train), len(val)) == (12, 4)
    assert not np.array_equal(train.images[:4], val.images)


def test_unwritable_cache_dir_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"^data\.cache_dir='.*file': must be a writable folder"):
        builtin.load(4, 4, seed=0, cache_dir=blocker)


def test_builtin_loaders_give_normalised_batches_and_labels_in_range(tmp_path):
    train, val, info = build_loaders(
        tiny_builtin(tmp_path), batch_size=8, eval_batch_size=16, seed=0
    )
    assert (info.name, info.num_classes, info.img_size) == ("builtin", 4, 64)
    assert (info.num_train, info.num_val, info.skipped) == (48, 16, 0)
    x, y = next(iter(train))
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert -1.0 <= x.min() and x.max() <= 1.0  # mean = std = 0.5
    labels = torch.cat([y for _, y in val])
    assert len(labels) == 16 and 0 <= labels.min() and labels.max() < 4
    assert len(train) == 6  # drop_last on train


# --- determinism ------------------------------------------------------------------------------


def test_train_batches_depend_only_on_seed_and_epoch(tmp_path):
    cfg = tiny_builtin(tmp_path, hflip=0.5, scale=[0.5, 1.0])  # random transforms too
    a, _, _ = build_loaders(cfg, batch_size=8, eval_batch_size=8, seed=1)
    b, _, _ = build_loaders(cfg, batch_size=8, eval_batch_size=8, seed=1)
    first_batches(b, epoch=1)  # b has already run other epochs and drawn from the global RNGs
    torch.rand(3)
    resumed = first_batches(b, epoch=3)
    fresh = first_batches(a, epoch=3)
    for (xa, ya), (xb, yb) in zip(fresh, resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other_epoch = first_batches(a, epoch=4)
    assert not torch.equal(fresh[0][1], other_epoch[0][1])
    c, _, _ = build_loaders(cfg, batch_size=8, eval_batch_size=8, seed=2)
    assert not torch.equal(fresh[0][0], first_batches(c, epoch=3)[0][0])


def test_train_batches_do_not_depend_on_the_number_of_workers(tmp_path):
    cfg = tiny_builtin(tmp_path, hflip=0.5)
    serial, _, _ = build_loaders(cfg, batch_size=8, eval_batch_size=8, seed=0)
    cfg_workers = tiny_builtin(tmp_path, hflip=0.5, num_workers=1)
    parallel, _, _ = build_loaders(cfg_workers, batch_size=8, eval_batch_size=8, seed=0)
    for (xa, ya), (xb, yb) in zip(
        first_batches(serial, 2), first_batches(parallel, 2), strict=True
    ):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_iterating_without_set_epoch_moves_to_the_next_epoch(tmp_path):
    train, _, _ = build_loaders(tiny_builtin(tmp_path), batch_size=48, eval_batch_size=8, seed=0)
    y1 = next(iter(train))[1]
    y2 = next(iter(train))[1]
    assert not torch.equal(y1, y2)
    assert train.epoch == 1


# --- transforms follow the config -------------------------------------------------------------


def test_img_size_and_normalisation_follow_the_config(tmp_path):
    cfg = tiny_builtin(tmp_path, img_size=32, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    train, val, info = build_loaders(cfg, batch_size=4, eval_batch_size=4, seed=0)
    x, _ = next(iter(train))
    xv, _ = next(iter(val))
    assert x.shape == xv.shape == (4, 3, 32, 32) and info.img_size == 32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.8


def test_hflip_one_mirrors_every_train_image(tmp_path):
    plain, val, _ = build_loaders(tiny_builtin(tmp_path), batch_size=4, eval_batch_size=4, seed=0)
    flipped_cfg = tiny_builtin(tmp_path, hflip=1.0)
    flipped, _, _ = build_loaders(flipped_cfg, batch_size=4, eval_batch_size=4, seed=0)
    (x, y), (xf, yf) = first_batches(plain, 1, 1)[0], first_batches(flipped, 1, 1)[0]
    assert torch.equal(y, yf)
    assert torch.allclose(x.flip(-1), xf)


def test_paper_recipe_yaml_builds_randaugment_erasing_and_248_to_224_eval(tmp_path):
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing
    from torchvision import transforms as T

    cfg = DataConfig.from_any(OmegaConf.load(CONF / "imagenet.yaml"))
    assert cfg.auto_augment == "rand-m9-mstd0.5-inc1" and cfg.re_prob == 0.25
    root = write_image_folder(tmp_path / "imgs", classes=2, per_class=2, size=260)
    cfg.root, cfg.num_workers = str(root), 0
    train, val, info = build_loaders(cfg, batch_size=2, eval_batch_size=2, seed=0)
    train_tf = train.dataset.transform.transforms
    assert any(isinstance(t, RandAugment) for t in train_tf)
    assert any(isinstance(t, RandomErasing) and t.probability == 0.25 for t in train_tf)
    eval_tf = val.dataset.transform.transforms
    resize = next(t for t in eval_tf if isinstance(t, T.Resize))
    crop = next(t for t in eval_tf if isinstance(t, T.CenterCrop))
    assert resize.size in (248, [248]) and tuple(crop.size) == (224, 224)
    assert resize.interpolation == T.InterpolationMode.BICUBIC
    x, _ = next(iter(val))
    assert x.shape == (2, 3, 224, 224)


@pytest.mark.parametrize(
    "name", ["builtin", "imagefolder", "imagenet", "cifar10", "cifar100", "fashion_mnist"]
)
def test_every_data_yaml_is_a_valid_data_config_with_every_key(name):
    node = OmegaConf.load(CONF / f"{name}.yaml")
    merged = OmegaConf.merge(OmegaConf.structured(DataConfig), node)
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, DataConfig) and cfg.name == name
    assert set(node) == set(OmegaConf.structured(DataConfig))


# --- image folders ----------------------------------------------------------------------------


def folder_cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(name="imagefolder", root=str(root), img_size=24, **kw)


def test_image_folder_loads_both_splits_with_inferred_classes(image_folder):
    train, val, info = build_loaders(
        folder_cfg(image_folder), batch_size=4, eval_batch_size=5, seed=0
    )
    assert (info.num_classes, info.num_train, info.num_val, info.skipped) == (3, 24, 12, 0)
    x, y = next(iter(train))
    assert x.shape == (4, 3, 24, 24)
    labels = torch.cat([y for _, y in val])
    assert sorted(labels.unique().tolist()) == [0, 1, 2]


def test_val_split_also_finds_the_val_folder(tmp_path):
    root = write_image_folder(tmp_path / "imgs", classes=2, per_class=2)
    (root / "validation").rename(root / "val")
    _, _, info = build_loaders(folder_cfg(root), batch_size=2, eval_batch_size=2, seed=0)
    assert info.num_val == 4


def write_corrupt(image_folder: Path) -> Path:
    bad = image_folder / "train" / "class_1" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return bad


def test_corrupt_image_is_skipped_and_counted_with_on_corrupt_skip(image_folder):
    write_corrupt(image_folder)
    cfg = folder_cfg(image_folder, on_corrupt="skip")
    train, _, info = build_loaders(cfg, batch_size=4, eval_batch_size=4, seed=0)
    assert (info.skipped, info.num_train) == (1, 24)
    assert sum(len(y) for _, y in train) == 24


def test_corrupt_image_stops_with_a_config_error_naming_it_with_on_corrupt_stop(image_folder):
    bad = write_corrupt(image_folder)
    with pytest.raises(ConfigError, match=r"data\.on_corrupt='stop': 1 corrupt") as err:
        build_loaders(
            folder_cfg(image_folder, on_corrupt="stop"), batch_size=4, eval_batch_size=4, seed=0
        )
    assert str(bad) in str(err.value) and "on_corrupt=skip" in str(err.value)


def test_image_whose_pixels_fail_to_decode_stops_at_load_time_with_on_corrupt_stop(tmp_path):
    root = write_image_folder(tmp_path / "imgs", classes=2, per_class=2)
    good = root / "train" / "class_0" / "0.png"
    truncated = root / "train" / "class_0" / "cut.jpg"
    Image.open(good).save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[:-200])  # the header still reads fine
    cfg = folder_cfg(root, on_corrupt="stop")
    train, _, info = build_loaders(cfg, batch_size=5, eval_batch_size=2, seed=0)
    assert info.skipped == 0
    with pytest.raises(ConfigError, match=r"cannot decode .*cut\.jpg.*on_corrupt=skip"):
        list(train)


def test_skip_is_the_default_for_corrupt_images():
    assert DataConfig().on_corrupt == "skip"


# --- CIFAR in torchvision's on-disk format ----------------------------------------------------


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar(root: Path, cls: type, per_file: int = 3) -> dict[str, str]:
    """A tiny folder in torchvision's CIFAR layout; returns each file's md5."""
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    num_classes = 10 if cls is CIFAR10 else 100
    label_key = "labels" if cls is CIFAR10 else "fine_labels"
    for name, _ in cls.train_list + cls.test_list:
        labels = rng.integers(0, num_classes, per_file).tolist()
        data = rng.integers(0, 256, (per_file, 3 * 32 * 32), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({"data": data, label_key: labels}))
    names = [f"class_{i}" for i in range(num_classes)]
    (folder / cls.meta["filename"]).write_bytes(pickle.dumps({cls.meta["key"]: names}))
    return {p.name: md5(p) for p in folder.iterdir()}


@pytest.fixture
def cifar_md5s_of(monkeypatch):
    """Point torchvision's md5 check at our tiny files (it pins the real files' checksums)."""

    def point(cls: type, sums: dict[str, str]) -> None:
        monkeypatch.setattr(cls, "train_list", [[n, sums[n]] for n, _ in cls.train_list])
        monkeypatch.setattr(cls, "test_list", [[n, sums[n]] for n, _ in cls.test_list])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": sums[cls.meta["filename"]]})

    return point


@pytest.mark.parametrize(
    ("name", "cls", "classes"), [("cifar10", CIFAR10, 10), ("cifar100", CIFAR100, 100)]
)
def test_cifar_is_read_from_torchvisions_on_disk_format(
    tmp_path, cifar_md5s_of, name, cls, classes
):
    cifar_md5s_of(cls, write_cifar(tmp_path, cls))
    cfg = DataConfig.from_any(OmegaConf.load(CONF / f"{name}.yaml"))
    cfg.root = str(tmp_path)
    train, val, info = build_loaders(cfg, batch_size=2, eval_batch_size=4, seed=0)
    train_files = len(cls.train_list)
    assert (info.num_classes, info.num_train, info.num_val) == (classes, 3 * train_files, 3)
    x, y = next(iter(train))
    assert x.shape == (2, 3, 32, 32) and 0 <= y.min() and y.max() < classes


def test_cifar_root_without_the_batches_is_a_config_error(tmp_path):
    (tmp_path / "something").mkdir()
    with pytest.raises(ConfigError, match=r"data\.root=.*cannot read torch/cifar10"):
        build_loaders(
            DataConfig(name="cifar10", root=str(tmp_path)), batch_size=2, eval_batch_size=2, seed=0
        )


# --- Fashion-MNIST from Debian's dataset-fashion-mnist -------------------------------------------

FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(
    not all((DEBIAN_FASHION / name).is_file() for name in FASHION_FILES),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)


@needs_fashion_mnist
def test_fashion_mnist_official_splits_are_read_from_the_debian_package():
    # The release's figures: 60,000 train and 10,000 test images, 6,000 and 1,000 per class.
    for split, per_class in (("train", 6000), ("validation", 1000)):
        images, labels = fashion_mnist.read_split(DEBIAN_FASHION, split)
        assert images.shape == (10 * per_class, 28, 28) and images.dtype == np.uint8
        assert np.bincount(labels).tolist() == [per_class] * 10
        assert images.min() == 0 and images.max() == 255
    assert len(fashion_mnist.CLASSES) == 10 and fashion_mnist.CLASSES[0] == "T-shirt/top"


@needs_fashion_mnist
def test_fashion_mnist_loaders_give_rgb_batches_resized_with_ten_classes():
    cfg = DataConfig.from_any(OmegaConf.load(CONF / "fashion_mnist.yaml"))
    cfg.num_train, cfg.num_val, cfg.img_size, cfg.num_workers = 40, 20, 32, 0
    train, val, info = build_loaders(cfg, batch_size=8, eval_batch_size=20, seed=0)
    assert (info.name, info.num_classes, info.num_train, info.num_val) == (
        "fashion_mnist",
        10,
        40,
        20,
    )
    x, y = next(iter(train))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # grey in 3 channels
    xv, yv = next(iter(val))
    assert xv.shape == (20, 3, 32, 32)
    assert np.bincount(yv.numpy(), minlength=10).tolist() == [2] * 10  # stratified


@needs_fashion_mnist
def test_fashion_mnist_subsets_are_stratified_and_drawn_by_the_data_seed():
    train, val = fashion_mnist.load(None, 55, 30, seed=0)
    again, _ = fashion_mnist.load(None, 55, 30, seed=0)
    other, _ = fashion_mnist.load(None, 55, 30, seed=1)
    assert sorted(np.bincount(train.labels).tolist()) == [5] * 5 + [6] * 5
    assert np.bincount(val.labels).tolist() == [3] * 10
    assert np.array_equal(train.images, again.images)
    assert not np.array_equal(train.images, other.images)
    test_images, _ = fashion_mnist.read_split(DEBIAN_FASHION, "validation")
    assert all((test_images == img).all(axis=(1, 2)).any() for img in val.images)


@needs_fashion_mnist
def test_fashion_mnist_reads_another_root_with_the_same_file_names(tmp_path):
    for name in FASHION_FILES:
        (tmp_path / name).symlink_to(DEBIAN_FASHION / name)
    cfg = DataConfig(name="fashion_mnist", root=str(tmp_path), num_train=10, num_val=10)
    _, _, info = build_loaders(cfg, batch_size=5, eval_batch_size=5, seed=0)
    assert (info.num_classes, info.num_train, info.num_val) == (10, 10, 10)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(num_train=60001), r"^data\.num_train=60001: must be in \[1, 60000\]$"),
        (dict(val_split="test"), r"^data\.val_split='test': must be one of train, validation$"),
    ],
)
@needs_fashion_mnist
def test_fashion_mnist_sizes_and_splits_are_checked(fields, message):
    cfg = DataConfig(name="fashion_mnist", **fields)
    with pytest.raises(ConfigError, match=message):
        build_loaders(cfg, batch_size=5, eval_batch_size=5, seed=0)


def test_fashion_mnist_file_that_is_not_gzipped_idx_is_a_config_error(tmp_path):
    for name in FASHION_FILES:
        (tmp_path / name).write_bytes(b"not gzip")
    cfg = DataConfig(name="fashion_mnist", root=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^data\.root=.*: cannot read train-images-idx3-ubyte"):
        build_loaders(cfg, batch_size=5, eval_batch_size=5, seed=0)


def test_fashion_mnist_missing_is_one_line_naming_the_package_exit_2_and_no_run_dir(tmp_path):
    done = run_app(["data=fashion_mnist", "data.root=/nonexistent"], cwd=tmp_path, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: data.root='/nonexistent': no train-images-idx3-ubyte.gz")
    assert "apt-get install dataset-fashion-mnist" in lines[0]
    # The run directory (runs/van_proxy/<run name>) is gone; Hydra's parent folders stay empty.
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == []
    assert list((tmp_path / "runs" / "van_proxy").iterdir()) == []


# --- bad input: one-line ConfigErrors ---------------------------------------------------------


def test_missing_root_is_a_config_error_naming_the_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=r"^data\.root='.*nope': no such folder$"):
        build_loaders(folder_cfg(missing), batch_size=2, eval_batch_size=2, seed=0)


def test_empty_root_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^data\.root='.*': the folder is empty$"):
        build_loaders(folder_cfg(tmp_path), batch_size=2, eval_batch_size=2, seed=0)


def test_unset_root_is_a_config_error_for_folder_data():
    with pytest.raises(
        ConfigError, match=r"^data\.root=None: must be a folder \(data\.name=imagenet reads it\)$"
    ):
        build_loaders(DataConfig(name="imagenet"), batch_size=2, eval_batch_size=2, seed=0)


def test_missing_split_folder_is_a_config_error(tmp_path):
    root = write_image_folder(tmp_path / "imgs", classes=2, per_class=2)
    with pytest.raises(ConfigError, match=r"^data\.val_split='test': no folder"):
        build_loaders(folder_cfg(root, val_split="test"), batch_size=2, eval_batch_size=2, seed=0)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5])
def test_bad_batch_size_is_a_config_error_on_the_train_key(tmp_path, batch_size):
    with pytest.raises(ConfigError, match=r"^train\.batch_size="):
        build_loaders(tiny_builtin(tmp_path), batch_size=batch_size, eval_batch_size=2, seed=0)


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        (dict(name="mnist"), "name"),
        (dict(name="torch/"), "name"),
        (dict(img_size=0), "img_size"),
        (dict(on_corrupt="ignore"), "on_corrupt"),
        (dict(interpolation="cubic"), "interpolation"),
        (dict(train_interpolation="cubic"), "train_interpolation"),
        (dict(scale=[0.5, 1.5]), "scale"),
        (dict(ratio=[1.0]), "ratio"),
        (dict(hflip=2.0), "hflip"),
        (dict(re_prob=-0.1), "re_prob"),
        (dict(mean=[0.5, 0.5]), "mean"),
        (dict(std=[0.5, 0.0, 0.5]), "std"),
        (dict(num_workers=-1), "num_workers"),
        (dict(num_classes=0), "num_classes"),
        (dict(auto_augment="bogus"), "auto_augment"),
        (dict(crop_pct=0.0), "crop_pct"),
        (dict(color_jitter=-0.5), "color_jitter"),
        (dict(ratio=[1.5, 1.0]), "ratio"),
        (dict(seed=-1), "seed"),
        (dict(num_train=True), "num_train"),
    ],
)
def test_bad_data_config_values_are_one_line_config_errors(fields, key):
    with pytest.raises(ConfigError, match=rf"^data\.{key}=") as err:
        DataConfig(**fields)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(name="mnist"), "data.name='mnist': must be one of builtin, "),
        (dict(crop_pct=0), "data.crop_pct=0: must be a number > 0 (eval resize"),
        (dict(mean=[0.5]), "data.mean=[0.5]: must be a list of 3 numbers (one per RGB channel)"),
        (dict(scale=[0.5, 1.5]), "data.scale=[0.5, 1.5]: must be [min, max] with 0 < min <= max"),
        (dict(hflip=2.0), "data.hflip=2.0: must be in [0, 1]"),
    ],
)
def test_data_config_refusals_say_what_is_allowed(fields, message):
    with pytest.raises(ConfigError) as err:
        DataConfig(**fields)
    assert str(err.value).startswith(message)


def test_unknown_data_key_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^data\.colour=.*unknown key"):
        DataConfig.from_any({"colour": 1})


def test_num_classes_below_the_datas_is_a_config_error(image_folder):
    with pytest.raises(
        ConfigError,
        match=r"^data\.num_classes=2: must be an integer >= 3 \(the data has 3 classes\)$",
    ):
        build_loaders(
            folder_cfg(image_folder, num_classes=2), batch_size=2, eval_batch_size=2, seed=0
        )


def test_randaugment_at_its_strongest_posterize_runs_with_the_installed_pillow():
    # rand-m9-mstd0.5-inc1 (imagefolder, imagenet, cifar) draws magnitudes up to 10, where
    # PosterizeIncreasing keeps 4 - int(10 / 10 * 4) = 0 bits: every channel goes to 0.
    from timm.data.auto_augment import AugmentOp

    img = Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8))
    out = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)(img)
    assert np.asarray(out).max() == 0
