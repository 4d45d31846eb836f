"""Hydra Sweeper plugin: Optuna 5 studies as Hydra multiruns (see ``config.py``)."""
