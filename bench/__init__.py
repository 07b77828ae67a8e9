"""make bench: the figures of README.md "Benchmarks" (run with python -m bench.run)."""
