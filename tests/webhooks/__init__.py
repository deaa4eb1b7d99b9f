"""Tests of the webhooks path: core, receiver, and end to end."""
