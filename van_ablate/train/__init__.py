"""Training one job (the ``train`` config group): the composition root (:mod:`.job`), the loop
(:mod:`.loop`), the recipe built from timm's parts (:mod:`.recipe`), what a run records
(:mod:`.record`), checkpoints, preemption, distributed set-up and the CPU threads
(:mod:`.hardware`, imported by ``van_ablate`` before torch: keep this file free of imports).
"""
