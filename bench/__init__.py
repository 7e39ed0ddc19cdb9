"""Benchmarks of issue 4 (`make bench`, or `python -m bench.run --help`); not part of the test suite."""
