"""The demo: emulator, broker and bridge on one machine, watched live."""
