"""Optuna sweeps as Hydra multiruns: search space, storage, coordination, outcomes, summary.

The Hydra side is the ``van_optuna`` sweeper in ``hydra_plugins/van_ablate_sweeper``; the job
side is :mod:`van_ablate.trial`.
"""
