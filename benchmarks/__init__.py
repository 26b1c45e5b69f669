"""Benchmarks for mcp-taskqueue: every figure a ratio to a baseline measured in the same run.

`python -m benchmarks` (or `make bench`) runs them all and writes docs/performance.md;
`python -m benchmarks --smoke` runs tiny sizes (tests/test_bench_smoke.py does this).
"""
