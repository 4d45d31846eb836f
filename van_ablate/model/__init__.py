"""The model: the switchable LKA (:mod:`.lka`), the VAN family as a timm model file (:mod:`.van`),
one description of a model (:mod:`.spec`), its Params/FLOPs (:mod:`.complexity`) and its initial
weights keyed by seed and parameter name (:mod:`.keyed_init`).

Nothing here reads a config file: the ablations and the paper's figures live in
:mod:`van_ablate.paper`, the config layer in :mod:`van_ablate.config`.
"""
