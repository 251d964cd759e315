"""Benchmarks of ambrosia-edge side by side with gRPC, DBOS Transact and the disk itself.

Run ``python -m benchmarks --quick`` (about two minutes) or ``python -m benchmarks`` (the full
set); ``docs/benchmarks.md`` explains every figure and how it is measured.
"""
