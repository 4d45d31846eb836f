"""The Hydra configs of ``python -m van_ablate``; installed as ``van_ablate.conf``."""
