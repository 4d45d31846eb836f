"""``python -m van_ablate.complexity``: the command lives in :mod:`van_ablate.paper_tables`."""

import sys

from van_ablate.paper_tables import main

sys.exit(main())
