"""Optuna sweeps as Hydra multiruns: search space, storage, coordination, outcomes, summary.

The sweep loop is :mod:`van_ablate.sweep.sweeper`; ``hydra_plugins/van_ablate_sweeper`` is only
Hydra's shim and config (``hydra/sweeper=van_optuna``); the job side is
:mod:`van_ablate.sweep.trial`.
"""
