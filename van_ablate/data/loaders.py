"""Data for a run: one :class:`DataConfig`, turned into train/eval loaders by timm.

Datasets come from ``timm.data.create_dataset`` (ImageNet-style folders, CIFAR in torchvision's
on-disk format, and every other source timm reads), from :mod:`van_ablate.data.builtin`, the
embedded default, or from :mod:`van_ablate.data.fashion_mnist` (Debian's package). Loaders and
transforms come from ``timm.data.create_loader`` / ``create_transform``. The ImageNet recipe of
the paper (Sec. 4.1; reference: imagenet_recipe) is ``conf/data/imagenet.yaml``: RandAugment
rand-m9-mstd0.5-inc1, random erasing 0.25, eval resize 248 -> center crop 224, bicubic,
mean = std = 0.5.

Determinism: the train order and every random augmentation are a function of
``(seed, epoch, sample index)`` only, never of the global RNG or the number of workers, so a run
resumed at epoch ``e`` after ``train_loader.set_epoch(e)`` sees bit-identical batches on CPU.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, List, Optional  # noqa: UP035 - OmegaConf 2.3 needs typing.List

import numpy as np
import torch
from PIL import Image
from timm.data import create_dataset, create_loader, create_transform
from timm.data.readers.img_extensions import get_img_extensions
from torch.utils.data import Dataset, IterableDataset

from van_ablate import checks
from van_ablate.data import builtin, fashion_mnist
from van_ablate.errors import ConfigError


def _builtin(cfg: DataConfig) -> tuple[Dataset, Dataset]:
    return builtin.load(cfg.num_train, cfg.num_val, cfg.seed, cfg.cache_dir, task=cfg.name)


def _fashion_mnist(cfg: DataConfig) -> tuple[Dataset, Dataset]:
    splits = (cfg.train_split, cfg.val_split)
    return fashion_mnist.load(cfg.root, cfg.num_train, cfg.num_val, cfg.seed, splits)


# data.name -> the reader of the data generated or stored on this machine: (train, validation),
# map-style datasets that list their ``classes``.
LOCAL_NAMES = {**dict.fromkeys(builtin.TASKS, _builtin), "fashion_mnist": _fashion_mnist}
FOLDER_NAMES = ("imagefolder", "imagenet")
TORCH_NAMES = {"cifar10": "torch/cifar10", "cifar100": "torch/cifar100"}
NAMES = (*LOCAL_NAMES, *FOLDER_NAMES, *TORCH_NAMES)
TIMM_PREFIXES = ("torch", "hfds", "hfids", "tfds", "wds")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
ON_CORRUPT = ("skip", "stop")
# timm's own split synonyms (timm.data.dataset_factory), for finding <root>/<split> folders.
SPLIT_SYNONYMS = (("train", "training"), ("validation", "val", "valid", "eval", "evaluation"))


@dataclass
class DataConfig:
    """The ``data`` config group. Defaults are the built-in dataset at 64 px without augmentation.

    >>> DataConfig(img_size=0)
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: data.img_size=0: must be an integer >= 1
    """

    name: str = "builtin"
    root: Optional[str] = None  # noqa: UP045 - OmegaConf 2.3 reads typing.Optional only
    train_split: str = "train"
    val_split: str = "validation"
    num_classes: Optional[int] = None  # noqa: UP045 - inferred from the data when None
    img_size: int = 64
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    mean: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])  # noqa: UP006
    std: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])  # noqa: UP006
    num_workers: int = 0
    # Train transforms (timm's transforms_imagenet_train).
    auto_augment: Optional[str] = None  # noqa: UP045 - e.g. "rand-m9-mstd0.5-inc1"
    re_prob: float = 0.0
    scale: List[float] = field(default_factory=lambda: [1.0, 1.0])  # noqa: UP006
    ratio: List[float] = field(default_factory=lambda: [1.0, 1.0])  # noqa: UP006
    hflip: float = 0.0
    color_jitter: float = 0.0
    train_interpolation: str = "bicubic"
    on_corrupt: str = "skip"
    # The built-in tasks' sizes and seed; Fashion-MNIST's subset sizes and the seed drawing them.
    num_train: int = 4000
    num_val: int = 1000
    seed: int = 0
    cache_dir: Optional[str] = None  # noqa: UP045 - None: ~/.cache/van_ablate

    def __post_init__(self) -> None:
        prefix, sep, rest = str(self.name).partition("/")
        if not (sep and rest and prefix.lower() in TIMM_PREFIXES):
            timm_names = (f"{p}/<name>" for p in TIMM_PREFIXES)
            checks.one_of("data.name", self.name, (*NAMES, *timm_names))
        for key in ("img_size", "num_train", "num_val"):
            checks.at_least(f"data.{key}", getattr(self, key), 1)
        checks.at_least("data.num_workers", self.num_workers, 0)
        checks.at_least("data.seed", self.seed, 0)
        if self.num_classes is not None:
            checks.at_least("data.num_classes", self.num_classes, 1)
        checks.above("data.crop_pct", self.crop_pct, 0, why="eval resize = img_size / crop_pct")
        checks.one_of("data.interpolation", self.interpolation, INTERPOLATIONS)
        checks.one_of(
            "data.train_interpolation", self.train_interpolation, (*INTERPOLATIONS, "random")
        )
        checks.numbers("data.mean", self.mean, 3, why="one per RGB channel")
        checks.numbers("data.std", self.std, 3, above=0, why="one per RGB channel")
        checks.in_range("data.re_prob", self.re_prob, 0, 1)
        checks.in_range("data.hflip", self.hflip, 0, 1)
        checks.above("data.color_jitter", self.color_jitter, 0, inclusive=True, why="0: off")
        checks.interval("data.scale", self.scale, 0, 1)
        checks.interval("data.ratio", self.ratio, 0)
        checks.one_of("data.on_corrupt", self.on_corrupt, ON_CORRUPT)
        if self.auto_augment:
            checks.accepted(
                "data.auto_augment",
                self.auto_augment,
                lambda aa: create_transform(self.img_size, is_training=True, auto_augment=aa),
                "must be null or a timm auto-augment string, e.g. rand-m9-mstd0.5-inc1",
            )

    @classmethod
    def from_any(cls, value: DataConfig | Any | None) -> DataConfig:
        """Accept a DataConfig, a mapping (YAML, DictConfig) or None for the defaults."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        checks.check_known_keys("data", value, cls)
        return cls(**{k: (list(v) if k in _LIST_KEYS else v) for k, v in dict(value).items()})


_LIST_KEYS = ("mean", "std", "scale", "ratio")


@dataclass
class DataInfo:
    """What the loaders hold: recorded in results.json under ``data``."""

    name: str
    num_classes: int
    img_size: int
    num_train: int
    num_val: int
    skipped: int = 0  # corrupt image files left out of the splits (data.on_corrupt=skip)


def build_loaders(
    cfg: DataConfig,
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    distributed: bool = False,
    world_size: int = 1,
    rank: int = 0,
    device: str = "cpu",
    pin_memory: bool | None = None,
    persistent_workers: bool = False,
    prefetch_factor: int | None = None,
) -> tuple[EpochLoader, EpochLoader, DataInfo]:
    """Train and eval loaders for ``cfg`` plus what they hold.

    ``pin_memory`` (default: on CUDA), ``persistent_workers`` and ``prefetch_factor`` (batches
    each worker loads ahead; torch's default 2) are the loader settings
    :mod:`van_ablate.loader_bench` compares; the training job keeps the defaults.

    Call ``train_loader.set_epoch(epoch)`` before each epoch (on resume too): the order and the
    augmentation of the train set depend only on ``(seed, epoch)``.

    >>> train, val, info = build_loaders(DataConfig(), batch_size=64,  # doctest: +SKIP
    ...                                  eval_batch_size=256, seed=0)
    >>> for epoch in range(start_epoch, epochs):  # doctest: +SKIP
    ...     train.set_epoch(epoch)
    ...     for images, targets in train: ...
    """
    checks.at_least("train.batch_size", batch_size, 1)
    checks.at_least("train.eval_batch_size", eval_batch_size, 1)
    train_ds, val_ds, num_classes, skipped = _datasets(cfg, seed)
    if cfg.num_classes is not None:
        why = f"the data has {num_classes} classes"
        checks.at_least("data.num_classes", cfg.num_classes, num_classes, why=why)
        num_classes = cfg.num_classes
    use_prefetcher = str(device).startswith("cuda")  # on CPU the transforms normalise themselves
    common = dict(
        input_size=(3, cfg.img_size, cfg.img_size),
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        num_workers=cfg.num_workers,
        distributed=distributed,
        crop_pct=cfg.crop_pct,
        device=torch.device(device),
        use_prefetcher=use_prefetcher,
        pin_memory=use_prefetcher if pin_memory is None else pin_memory,
        # Workers are re-forked each epoch so they see the epoch set on the dataset.
        persistent_workers=persistent_workers and cfg.num_workers > 0,
    )
    train = create_loader(
        train_ds,
        batch_size=batch_size,
        is_training=True,
        auto_augment=cfg.auto_augment,
        re_prob=cfg.re_prob,
        scale=tuple(cfg.scale),
        ratio=tuple(cfg.ratio),
        hflip=cfg.hflip,
        color_jitter=cfg.color_jitter or None,
        interpolation=cfg.train_interpolation,
        **common,
    )
    val = create_loader(
        val_ds,
        batch_size=eval_batch_size,
        is_training=False,
        interpolation=cfg.interpolation,
        **common,
    )
    if prefetch_factor is not None and cfg.num_workers > 0:
        for loader in (train, val):
            # timm's create_loader does not take it; torch reads it when an epoch starts.
            getattr(loader, "loader", loader).prefetch_factor = prefetch_factor
    if distributed:
        for loader in (train, val):
            sampler = loader.sampler
            if (sampler.num_replicas, sampler.rank) != (world_size, rank):
                raise RuntimeError(
                    f"process group has world size {sampler.num_replicas} and rank "
                    f"{sampler.rank}, build_loaders was given {world_size} and {rank}"
                )
    info = DataInfo(cfg.name, num_classes, cfg.img_size, len(train_ds), len(val_ds), skipped)
    return EpochLoader(train, seed, shuffle=True), EpochLoader(val, seed, shuffle=False), info


class EpochLoader:
    """A timm loader whose batches depend only on ``(seed, epoch)``: call ``set_epoch`` first.

    Iterating without ``set_epoch`` moves on to the next epoch by itself. Yields
    ``(images, targets)``: float NCHW normalised images and int64 class indices.
    """

    def __init__(self, loader: Any, seed: int, shuffle: bool):
        self.loader, self.seed, self.shuffle = loader, seed, shuffle
        self.epoch = 0
        self._next_epoch: int | None = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (any int; the train loop's 1-based count is fine)."""
        self._next_epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.epoch = self.epoch + 1 if self._next_epoch is None else self._next_epoch
        self._next_epoch = None
        dataset, sampler = self.dataset, self.sampler
        if hasattr(dataset, "set_epoch"):  # _Samples, or timm's iterable datasets
            dataset.set_epoch(self.epoch)
        if hasattr(sampler, "set_epoch"):  # DistributedSampler
            sampler.seed = self.seed
            sampler.set_epoch(self.epoch)
        elif self.shuffle and hasattr(sampler, "generator"):  # RandomSampler
            sampler.generator = _generator(self.seed, self.epoch, 0)
        # The loader's generator gives worker seeds; unseeded it would draw from the global RNG.
        loader = getattr(self.loader, "loader", self.loader)
        loader.generator = _generator(self.seed, self.epoch, 1)
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def dataset(self) -> Dataset:
        return self.loader.dataset

    @property
    def sampler(self) -> Any:
        return self.loader.sampler


class _Samples(Dataset):
    """A map-style dataset restricted to ``indices`` whose ``i``-th sample is drawn with every
    RNG (python, numpy, torch) seeded from ``(seed, epoch, i)``.

    timm's transforms draw from the global RNGs; seeding per sample makes an epoch's
    augmentation independent of the workers and of whatever else the process randomises. The
    global states are saved and restored once per batch (``__getitems__``), not per sample.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int] | None, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0
        self.indices = list(range(len(dataset))) if indices is None else list(indices)
        self.stop_on_error = False  # raise a ConfigError naming a file timm could not decode

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def transform(self) -> Any:
        return self.dataset.transform

    @transform.setter
    def transform(self, value: Any) -> None:  # create_loader assigns the transform here
        self.dataset.transform = value

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.__getitems__([i])[0]

    def __getitems__(self, batch: Sequence[int]) -> list[Any]:
        with _restored_rng():
            return [self._load(i) for i in batch]

    def _load(self, i: int) -> Any:
        seed = _seed(self.seed, self.epoch, i)
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)
        try:
            return self.dataset[self.indices[i]]
        except RuntimeError as e:  # timm's ImageDataset gave up decoding (data.on_corrupt=stop)
            if not self.stop_on_error:
                raise
            name = self.dataset.filename(self.indices[i], absolute=True)
            allowed = f"cannot decode {name}; remove it or set data.on_corrupt=skip"
            raise ConfigError("data.on_corrupt", "stop", allowed) from e


def _datasets(cfg: DataConfig, seed: int) -> tuple[Dataset, Dataset, int, int]:
    """Train and eval datasets, the number of classes and the count of skipped corrupt files."""
    if cfg.name in LOCAL_NAMES:
        train, val = LOCAL_NAMES[cfg.name](cfg)
        return _Samples(train, None, seed), _Samples(val, None, seed), len(train.classes), 0
    root = _check_root(cfg)
    if cfg.name in FOLDER_NAMES:
        train, skipped_train = _folder(cfg, root, cfg.train_split, "train_split", seed)
        val, skipped_val = _folder(cfg, root, cfg.val_split, "val_split", seed)
        num_classes = len(train.dataset.reader.class_to_idx)
        return train, val, num_classes, skipped_train + skipped_val
    name = TORCH_NAMES.get(cfg.name, cfg.name)
    splits = []
    for key, split in (("train_split", cfg.train_split), ("val_split", cfg.val_split)):
        try:
            ds = create_dataset(
                name,
                root=root,
                split=split,
                is_training=key == "train_split",
                download=False,
                seed=seed,
            )
        except (RuntimeError, FileNotFoundError, AssertionError, ValueError) as e:
            allowed = f"cannot read {name} split {split!r} here: {checks.first_line(e)}"
            raise ConfigError("data.root", root, allowed) from None
        splits.append(ds if isinstance(ds, IterableDataset) else _Samples(ds, None, seed))
    return splits[0], splits[1], _num_classes(cfg, splits[0]), 0


def _check_root(cfg: DataConfig) -> str:
    return str(checks.folder("data.root", cfg.root, why=f"data.name={cfg.name} reads it"))


def _folder(cfg: DataConfig, root: str, split: str, key: str, seed: int) -> tuple[_Samples, int]:
    """One split of an ImageNet-style folder (``<root>/<split>/<class>/<image>``)."""
    synonyms = next((s for s in SPLIT_SYNONYMS if split in s), (split,))
    path = next((os.path.join(root, s) for s in (split, *synonyms)
                 if os.path.isdir(os.path.join(root, s))), None)  # fmt: skip
    if path is None:
        allowed = f"no folder {os.path.join(root, split)} (nor {', '.join(synonyms)})"
        raise ConfigError(f"data.{key}", split, allowed)
    try:
        ds = create_dataset("", root=path, split=split, search_split=False)
    except RuntimeError:  # timm's reader found no file with an image extension
        raise _no_image(cfg.root, path, []) from None
    good, bad = [], []
    for i, (filename, _) in enumerate(ds.reader.samples):
        (bad if _corrupt(filename) else good).append(i)
    if not good:
        raise _no_image(cfg.root, path, [ds.reader.samples[i][0] for i in bad])
    if bad and cfg.on_corrupt == "stop":
        first = ds.reader.samples[bad[0]][0]
        raise ConfigError(
            "data.on_corrupt",
            "stop",
            f"{len(bad)} corrupt image(s) in {path}, first {first}; "
            "remove them or set data.on_corrupt=skip",
        )
    samples = _Samples(ds, good, seed)
    if cfg.on_corrupt == "stop":
        # The scan reads headers; a file whose pixels fail to decode later stops the run too,
        # where timm would log it and substitute the next image.
        ds._max_retries = 1
        samples.stop_on_error = True
    return samples, len(bad)


def _no_image(root: str | None, path: str, unreadable: list[str]) -> ConfigError:
    """The refusal of a split with no readable image, saying what its folder holds."""
    classes = [e for e in os.scandir(path) if e.is_dir()]
    files = [os.path.join(d, f) for d, _, names in os.walk(path) for f in names]
    found = f"{len(classes)} class folder(s) and {len(files)} file(s)"
    if unreadable:
        empty = sum(os.path.getsize(f) == 0 for f in unreadable)
        first = os.path.relpath(unreadable[0], path)
        found += f", none readable ({empty} of {len(unreadable)} images are 0 bytes; e.g. {first})"
    elif files:
        found += f", none named {'/'.join(get_img_extensions())}"
    allowed = f"no readable image in {path}: found {found}; expected <class>/<image> files"
    return ConfigError("data.root", root, allowed)


def _corrupt(filename: str) -> bool:
    """True when PIL cannot identify or verify the file (reads the header, not every pixel)."""
    try:
        with Image.open(filename) as img:
            img.verify()
    except Exception:  # PIL raises many types for bad files (OSError, SyntaxError, ValueError...)
        return True
    return False


def _num_classes(cfg: DataConfig, ds: Dataset) -> int:
    inner = getattr(ds, "dataset", ds)
    for source in (inner, getattr(inner, "reader", None)):
        for attr in ("classes", "class_to_idx"):
            if getattr(source, attr, None):
                return len(getattr(source, attr))
    if cfg.num_classes is None:
        raise ConfigError("data.num_classes", None, f"cannot be inferred for {cfg.name}; set it")
    return cfg.num_classes


def _seed(*parts: int) -> int:
    """A 32-bit seed mixing ``parts`` (splitmix64 steps): cheap enough to call per sample."""
    h = 0x9E3779B97F4A7C15
    for part in parts:
        h = ((h ^ (part & _MASK64)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 31)) * 0x94D049BB133111EB) & _MASK64
    return (h ^ (h >> 32)) & 0xFFFFFFFF


_MASK64 = (1 << 64) - 1


def _generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*parts))


@contextlib.contextmanager
def _restored_rng() -> Iterator[None]:
    """Give back the global python, numpy and torch RNG states as they were on entry."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
