"""Fashion-MNIST (Xiao, Rasul and Vollgraf 2017; MIT licence): 70,000 28x28 grey images of
clothing in 10 classes, 60,000 to train on and the official 10,000-image test split, which is the
validation set here (``data=fashion_mnist``).

The four gzip'd IDX files come from Debian's ``dataset-fashion-mnist`` package
(:data:`DEBIAN_ROOT`), or from any folder holding them under the same names (``data.root``), and
are read with torchvision's MNIST-family reader. ``data.num_train`` / ``data.num_val`` take a
class-stratified subset drawn from ``data.seed``, so a small run still sees every class evenly.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torchvision.datasets import FashionMNIST as _TorchvisionFashionMNIST
from torchvision.datasets.mnist import read_image_file, read_label_file

from van_ablate import checks
from van_ablate.data.builtin import BuiltinDataset
from van_ablate.errors import ConfigError

PACKAGE = "dataset-fashion-mnist"
DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"  # where the package puts the files
# split -> (images, labels): the file names of the original release, kept by the package.
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "validation": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASSES = tuple(_TorchvisionFashionMNIST.classes)
NUM_CLASSES = len(CLASSES)


def read_split(root: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All images (uint8, N x 28 x 28) and labels (int64) of ``split`` ("train" or
    "validation", the official test split) from the gzip'd IDX files in ``root``."""
    images, labels = (
        _read_gzipped(Path(root) / name, reader)
        for name, reader in zip(FILES[split], (read_image_file, read_label_file), strict=True)
    )
    return images, labels


def load(
    root: str | None,
    num_train: int,
    num_val: int,
    seed: int,
    splits: tuple[str, str] = ("train", "validation"),
) -> tuple[BuiltinDataset, BuiltinDataset]:
    """Train and validation sets of ``num_train`` / ``num_val`` images from ``splits`` (keys of
    :data:`FILES`), each a class-stratified subset drawn from ``seed`` (the whole split when the
    number is its size).

    ``root`` None reads Debian's package folder. A missing file is one :class:`ConfigError` line
    naming the package and its install command.
    """
    root = str(Path(root).expanduser()) if root else DEBIAN_ROOT
    missing = [name for names in FILES.values() for name in names if not _is_file(root, name)]
    if missing:
        allowed = (
            f"no {missing[0]} there; install Debian's {PACKAGE} (apt-get install {PACKAGE}) "
            "or point data.root at a folder holding its four .gz files"
        )
        raise ConfigError("data.root", root, allowed)
    checks.one_of("data.train_split", splits[0], FILES)
    checks.one_of("data.val_split", splits[1], FILES)
    train = _subset(root, splits[0], "data.num_train", num_train, seed=(seed, 0))
    val = _subset(root, splits[1], "data.num_val", num_val, seed=(seed, 1))
    return train, val


def stratified_subset(labels: np.ndarray, n: int, seed: Any) -> np.ndarray:
    """Sorted indices of ``n`` samples drawn from ``seed`` whose class counts differ by at most
    one where the classes allow (round robin over the classes, each in a shuffled order).

    >>> labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])
    >>> np.bincount(labels[stratified_subset(labels, 5, seed=0)]).tolist()
    [2, 2, 1]
    """
    # By hand: none of our dependencies draws a stratified subset (scikit-learn is not one).
    order = np.random.default_rng(seed).permutation(len(labels))
    rank = np.empty(len(labels), np.int64)  # a sample's place in its class's shuffled order
    for c in np.unique(labels):
        members = order[labels[order] == c]
        rank[members] = np.arange(len(members))
    return np.sort(order[np.argsort(rank[order], kind="stable")[:n]])


def _subset(root: str, split: str, key: str, n: int, seed: Any) -> BuiltinDataset:
    images, labels = read_split(root, split)
    checks.in_range(key, n, 1, len(labels))
    keep = stratified_subset(labels, n, seed)
    return BuiltinDataset(images[keep], labels[keep], classes=CLASSES)


def _is_file(root: str, name: str) -> bool:
    return os.path.isfile(os.path.join(root, name))


def _read_gzipped(path: Path, reader: Any) -> np.ndarray:
    """``reader`` (torchvision's) over the gunzip'd file, as a numpy array."""
    # torchvision's reader opens a path and does not gunzip (0.29), so the IDX bytes go through
    # a temporary file that is gone when the read returns.
    try:
        with gzip.open(path, "rb") as src, tempfile.NamedTemporaryFile() as idx:
            shutil.copyfileobj(src, idx)
            idx.flush()
            return reader(idx.name).numpy()
    except (OSError, EOFError, AssertionError, TypeError, ValueError) as e:
        allowed = f"cannot read {path.name} as gzip'd IDX ({checks.first_line(e)})"
        raise ConfigError("data.root", str(path.parent), allowed) from None
