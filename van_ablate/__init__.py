"""van-ablate: ablate and search the Large Kernel Attention of the Visual Attention Network.

Importing the package registers ``van_b0`` ... ``van_b6`` and ``van_proxy`` with timm, and
asks OpenMP for a passive wait policy when other processes keep the CPUs busy, unless
``OMP_WAIT_POLICY`` is set (:mod:`van_ablate.train.hardware`).
"""

import os

from van_ablate.train.hardware import choose_wait_policy

choose_wait_policy(os.environ)  # before torch loads OpenMP, which reads it only then

from van_ablate.model import van  # noqa: E402, F401  (registers the models with timm)
from van_ablate.model.lka import LKA, LKASpec, auto_dilation  # noqa: E402

__all__ = ["LKA", "LKASpec", "auto_dilation"]
__version__ = "0.1.0"
