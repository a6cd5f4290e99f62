"""Speed and scale benchmarks (not tests): `python -m benchmarks.<name>` (see README.md)."""
