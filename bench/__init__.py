"""Benchmarks: each module prints figures and ratios against a baseline measured in the same run.

Run one with `python -m bench.<module>`, all with `python -m bench` (or `make bench`).
"""
