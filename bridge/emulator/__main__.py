"""`python -m bridge.emulator` runs the emulator on its own."""

import sys

from bridge.emulator.cli import main

sys.exit(main())
