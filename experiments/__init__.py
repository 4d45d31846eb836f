"""The ready Optuna studies (``+study=...``); installed as ``van_ablate.experiments``."""
