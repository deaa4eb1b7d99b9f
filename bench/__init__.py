"""Benchmarks of sendstack-bridge (not tests): ``python -m bench.<name>``.

Results go to ``bench/results/`` (git-ignored).
"""
