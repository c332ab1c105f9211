"""lensbox benchmarks: quality on UKBench, speed, memory/size and scaling (not shipped).

Run everything with ``python -m bench.run_all`` from the repository root; see
docs/benchmarks.md for what each part measures.
"""
