"""Benchmarks of issue 7; each module runs as `python -m benchmarks.<name>` (see README.md)."""
