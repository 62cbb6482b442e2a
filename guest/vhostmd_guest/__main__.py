"""``python -m vhostmd_guest`` runs ``vm-dump-metrics``."""

import sys

from .dump import main

sys.exit(main())
