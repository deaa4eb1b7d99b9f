"""The development kit of sendstack-bridge: emulator, demo, local broker.

Not shipped in the image: the product is ``bridge``, and nothing there
imports this package (an import-linter contract checks it).
"""
