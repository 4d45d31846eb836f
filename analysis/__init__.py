"""Reports for van-ablate: the paper's tables and our figures regenerated from runs and studies.

Collect runs (``results.json``), Optuna studies and W&B runs into one pandas DataFrame
(:mod:`van_ablate.analysis.collect`), rebuild Table 3, the kernel-size table and the LayerScale
table of "Visual Attention Network" beside the paper's figures
(:mod:`van_ablate.analysis.tables`), draw the figures (:mod:`van_ablate.analysis.figures`) and
look at what LKA attends to (:mod:`van_ablate.analysis.attention`). The commands are
``python -m van_ablate.analysis.report`` and ``python -m van_ablate.analysis.attention``.

The code lives in the repository's ``analysis/`` folder and installs as ``van_ablate.analysis``.
"""
