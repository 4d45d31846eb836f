"""van-ablate: ablate and search the Large Kernel Attention of the Visual Attention Network.

Importing the package registers ``van_b0`` ... ``van_b6`` and ``van_proxy`` with timm.
"""

from van_ablate import van  # noqa: F401  (registers the models with timm)
from van_ablate.lka import LKA, LKASpec, auto_dilation

__all__ = ["LKA", "LKASpec", "auto_dilation"]
__version__ = "0.1.0"
