"""The paper, "Visual Attention Network" (Guo et al. 2022): its printed figures and which ablation
builds each row (:mod:`.figures`, re-exported here), the ablations themselves as the config layer
defines them (:mod:`.ablation`), and the Params/FLOPs tables beside ours (:mod:`.tables`)::

    from van_ablate import paper
    paper.TABLE3[0].ablation   # 'no_dw_conv'
"""

from van_ablate.paper.figures import *  # noqa: F403
from van_ablate.paper.figures import __all__  # noqa: F401
