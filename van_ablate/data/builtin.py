"""The built-in datasets: CPU-sized image tasks whose labels need what LKA is built for.

Three tasks, chosen by ``data.name``; ``builtin`` is ``builtin_v1``.

``builtin_v1``: a task whose label needs long-range comparisons.

LKA's claim (paper Sec. 3.2, Table 3 and the kernel-size table) is that a large, decomposed
receptive field helps. On ImageNet that takes GPU-days to show; this task makes it visible in
minutes. Each 64x64 image is a 16x16 grid of coloured dots, one per 4x4 px cell (the stride of
VAN's first stage). The grid repeats under one shift of ``PERIOD`` = 7 cells (28 px): along the
row, the column, the diagonal or the anti-diagonal; the label is which of the four. Then
``NOISE`` = 30% of the dots are redrawn, so the repeat holds on average, not exactly. Any window
narrower than 8 cells looks like plain noise: the label can only be read by comparing dots 28 px
apart. VAN's default LKA (K=21, d=3) reaches 23 cells of the first stage's grid; ``k7`` (K=7,
d=2) reaches 9 and ``no_dwd_conv`` 5, so they must compare after downsampling, where 28 px is
3.5 cells of the second stage and the copies no longer line up with its grid.

``builtin_v3`` gives every part of LKA (Sec. 3.2, Table 3) a job on the same grid and period, and
is the task of ``scale=proxy``:

- local structure (DW-Conv): each cell shows a 3 px bar; a horizontal bar makes the cell a *cue*,
  a vertical one a *distractor*, so the cell's role is a pixel-level pattern;
- cross-channel structure (1x1 conv): the cell's symbol is its bar's colour, one of v1's four,
  which no single channel tells apart (red and yellow share red, green and yellow share green);
- input-dependent selection (the attention's multiplication): the cues' colours repeat under the
  label's shift, the distractors' under another direction (drawn per image, never the label's);
  which cells are cues (``CUE_FRACTION_V3`` = 85 %) is drawn afresh per image, so a model that
  weighs every cell alike sees the label's repeat diluted by a second one;
- long-range structure (large K with the DW-D-Conv): the shift is ``PERIOD`` = 7 cells (28 px),
  off the stage-2 grid, as in v1.

``builtin_v2`` was the first such design (orientation as the symbol, red == green marking cues,
half the cells cues, 30 % noise); at a 2-core CPU's budget it is memorised, not learnt. v3 keeps
most cells as cues and redraws fewer (``NOISE_V3`` = 10 %), which proxy runs learn within
6 epochs in most seeds (measured values: README, "The built-in dataset").

All are generated with numpy from a seed, cached as a ``.npz`` (written atomically) and served
as PIL images, so timm's transforms and loaders apply as to any other dataset.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from van_ablate.errors import ConfigError
from van_ablate.io import atomic_write

NUM_CLASSES = 4  # the direction of the repeat: row, column, diagonal, anti-diagonal
CLASSES = ("row", "column", "diagonal", "anti_diagonal")
IMG_SIZE = 64  # native size; data.img_size resizes through timm's transforms
CELL = 4  # px per dot cell: the stride of VAN's stage-1 patch embedding
PERIOD = 7  # cells between repeats: an odd multiple of CELL px, so off the stage-2 grid
DOT = 3  # px side of a dot; the rest of the cell shows the background
NOISE = 0.3  # fraction of dots drawn afresh after the repeat, so it holds only on average
BACKGROUND = 40
PALETTE = np.array([[230, 40, 40], [40, 200, 40], [50, 90, 255], [230, 210, 30]], np.uint8)
SHIFTS = ((0, PERIOD), (PERIOD, 0), (PERIOD, PERIOD), (PERIOD, -PERIOD))  # (dy, dx) per class
# builtin_v2: (R, G, B) per kind and shade; R == G for cues, R != G for distractors.
CUE_COLOURS = np.array([[220, 220, 70], [90, 90, 70]], np.uint8)
DISTRACTOR_COLOURS = np.array([[220, 90, 70], [90, 220, 70]], np.uint8)
BAR = np.zeros((CELL, CELL), bool)
BAR[1, :DOT] = True  # horizontal; the vertical bar is its transpose
CUE_FRACTION = 0.5
# builtin_v3: colour is the symbol, the bar's orientation the role (horizontal: cue)
CUE_FRACTION_V3 = 0.85
NOISE_V3 = 0.1


def generate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8, N x 64 x 64 x 3) and labels (int64), a pure function of the seed.

    >>> images, labels = generate(8, seed=0)
    >>> images.shape, images.dtype.name, sorted(set(labels.tolist())) <= [0, 1, 2, 3]
    ((8, 64, 64, 3), 'uint8', True)
    """
    rng = np.random.default_rng(seed)
    grid = IMG_SIZE // CELL
    labels = rng.integers(0, NUM_CLASSES, n)
    colours = _repeat(rng.integers(0, len(PALETTE), (n, grid, grid)), labels)
    fresh = rng.random(colours.shape) < NOISE
    colours[fresh] = rng.integers(0, len(PALETTE), int(fresh.sum()))
    dots = PALETTE[colours].repeat(CELL, axis=1).repeat(CELL, axis=2)
    in_dot = np.tile(np.arange(CELL) < DOT, grid)
    in_dot = in_dot[:, None] & in_dot[None, :]
    images = np.where(in_dot[None, :, :, None], dots, BACKGROUND).astype(np.uint8)
    return images, labels.astype(np.int64)


def generate_v2(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``builtin_v2``: ``n`` images (uint8, N x 64 x 64 x 3) and labels, from the seed alone.

    The label is the direction in which the cue cells' bar orientations repeat.

    >>> images, labels = generate_v2(8, seed=0)
    >>> images.shape, images.dtype.name, sorted(set(labels.tolist())) <= [0, 1, 2, 3]
    ((8, 64, 64, 3), 'uint8', True)
    """
    rng = np.random.default_rng(seed)
    grid = IMG_SIZE // CELL
    labels, cue, symbols = _cues_and_decoys(rng, n, 2, CUE_FRACTION)
    vertical = symbols.astype(bool)
    fresh = rng.random(vertical.shape) < NOISE
    vertical[fresh] = rng.random(int(fresh.sum())) < 0.5
    shade = rng.integers(0, 2, (n, grid, grid))
    colours = np.where(cue[..., None], CUE_COLOURS[shade], DISTRACTOR_COLOURS[shade])
    bars = np.where(vertical[..., None, None], BAR.T, BAR)  # N x grid x grid x CELL x CELL
    cells = np.where(bars[..., None], colours[:, :, :, None, None, :], BACKGROUND)
    images = cells.transpose(0, 1, 3, 2, 4, 5).reshape(n, IMG_SIZE, IMG_SIZE, 3)
    return images.astype(np.uint8), labels.astype(np.int64)


def generate_v3(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``builtin_v3``: ``n`` images (uint8, N x 64 x 64 x 3) and labels, from the seed alone.

    The label is the direction in which the colours of the cue cells (horizontal bars) repeat.

    >>> images, labels = generate_v3(8, seed=0)
    >>> images.shape, images.dtype.name, sorted(set(labels.tolist())) <= [0, 1, 2, 3]
    ((8, 64, 64, 3), 'uint8', True)
    """
    rng = np.random.default_rng(seed)
    labels, cue, colours = _cues_and_decoys(rng, n, len(PALETTE), CUE_FRACTION_V3)
    fresh = rng.random(colours.shape) < NOISE_V3
    colours[fresh] = rng.integers(0, len(PALETTE), int(fresh.sum()))
    bars = np.where(cue[..., None, None], BAR, BAR.T)  # N x grid x grid x CELL x CELL
    cells = np.where(bars[..., None], PALETTE[colours][:, :, :, None, None, :], BACKGROUND)
    images = cells.transpose(0, 1, 3, 2, 4, 5).reshape(n, IMG_SIZE, IMG_SIZE, 3)
    return images.astype(np.uint8), labels.astype(np.int64)


def _cues_and_decoys(
    rng: np.random.Generator, n: int, n_symbols: int, cue_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, the cue mask and each cell's symbol (N x grid x grid): the cues' symbols repeat
    under the label's shift, the distractors' under another direction, drawn per image."""
    grid = IMG_SIZE // CELL
    labels = rng.integers(0, NUM_CLASSES, n)
    decoys = (labels + rng.integers(1, NUM_CLASSES, n)) % NUM_CLASSES  # never the label
    cue_symbols = _repeat(rng.integers(0, n_symbols, (n, grid, grid)), labels)
    decoy_symbols = _repeat(rng.integers(0, n_symbols, (n, grid, grid)), decoys)
    cue = rng.random((n, grid, grid)) < cue_fraction
    return labels, cue, np.where(cue, cue_symbols, decoy_symbols)


def _repeat(cells: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Make each image's cells (N x grid x grid) repeat under its label's shift, in place."""
    grid = cells.shape[-1]
    for label, (dy, dx) in enumerate(SHIFTS):
        c = cells[labels == label]
        if dy == 0:  # repeat along the row: column x copies column x - dx
            for x in range(dx, grid):
                c[:, :, x] = c[:, :, x - dx]
        else:  # row y copies row y - dy, shifted by dx
            for y in range(dy, grid):
                if dx >= 0:
                    c[:, y, dx:] = c[:, y - dy, : grid - dx]
                else:
                    c[:, y, : grid + dx] = c[:, y - dy, -dx:]
        cells[labels == label] = c
    return cells


# data.name -> (generator, cache file prefix); a changed generator gets a new name and prefix,
# so old caches are never reused for it.
TASKS = {
    "builtin": (generate, "builtin-v1"),
    "builtin_v1": (generate, "builtin-v1"),
    "builtin_v2": (generate_v2, "builtin-v2"),
    "builtin_v3": (generate_v3, "builtin-v3"),
}


class BuiltinDataset(Dataset):
    """Images held in memory as uint8 arrays, served as RGB PIL images with int labels;
    ``transform`` is set by timm's ``create_loader``. Fashion-MNIST serves its grey images
    through it too, given its own ``classes``."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        transform: Any = None,
        classes: Sequence[str] = CLASSES,
    ):
        self.images, self.labels, self.transform = images, labels, transform
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        # grey (N x H x W) is repeated into 3 channels: every run keeps VAN's RGB stem (the same
        # model, cost and recipe as on the other data) and timm's RGB transforms apply
        img = Image.fromarray(self.images[i]).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[i])


def default_cache_dir() -> Path:
    """Where the generated splits live unless ``data.cache_dir`` says otherwise."""
    return Path.home() / ".cache" / "van_ablate"


def load(
    num_train: int,
    num_val: int,
    seed: int,
    cache_dir: str | os.PathLike | None = None,
    task: str = "builtin",
) -> tuple[BuiltinDataset, BuiltinDataset]:
    """Train and validation splits of ``task`` (one of :data:`TASKS`), generated on first use
    and cached under ``cache_dir``.

    The splits are generated from different seeds (``2 * seed`` and ``2 * seed + 1``).
    """
    generate_task, tag = TASKS[task]
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = cache_dir / f"{tag}-seed{seed}-train{num_train}-val{num_val}.npz"
    if path.exists():
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    else:
        xt, yt = generate_task(num_train, seed=2 * seed)
        xv, yv = generate_task(num_val, seed=2 * seed + 1)
        arrays = dict(train_x=xt, train_y=yt, val_x=xv, val_y=yv)
        try:  # uncompressed: ~12 KB an image on disk, but written and read in about a second
            atomic_write(path, lambda f: np.savez(f, **arrays))
        except OSError as e:
            allowed = f"must be a writable folder for the built-in dataset's cache ({e.strerror})"
            raise ConfigError("data.cache_dir", str(cache_dir), allowed) from None
    train = BuiltinDataset(arrays["train_x"], arrays["train_y"])
    val = BuiltinDataset(arrays["val_x"], arrays["val_y"])
    return train, val
