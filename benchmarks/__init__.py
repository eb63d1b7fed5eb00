"""Throughput and memory measurements of the toolkit against the plain way, run with ``python -m benchmarks.run``."""
