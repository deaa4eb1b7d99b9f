"""``python -m bridgelab.emulator`` runs the emulator (also ``sendstack-emulator``)."""

import sys

from bridgelab.emulator.cli import main

sys.exit(main())
