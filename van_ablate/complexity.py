"""``python -m van_ablate.complexity``: Params and FLOPs of every paper row beside the paper's.

The command lives in :mod:`van_ablate.paper.tables`; the counting in
:mod:`van_ablate.model.complexity`.
"""

import sys

from van_ablate.paper.tables import main

if __name__ == "__main__":
    sys.exit(main())
