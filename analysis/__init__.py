"""Reports for van-ablate: the paper's tables and our figures regenerated from runs and studies.

Collect runs (``results.json``), Optuna studies and W&B runs into one pandas DataFrame
(:mod:`analysis.collect`), rebuild Table 3, the kernel-size table and the LayerScale table of
"Visual Attention Network" beside the paper's figures (:mod:`analysis.tables`), draw the figures
(:mod:`analysis.figures`) and look at what LKA attends to (:mod:`analysis.attention`). The commands
are ``python -m analysis.report`` and ``python -m analysis.attention``.
"""
