"""``python -m bridgelab.demo`` runs the demo (what ``make demo`` calls)."""

import sys

from bridgelab.demo.flow import main

sys.exit(main(sys.argv[1:]))
