"""Speed benchmarks that stay in the project: `python -m benchmarks.davidnet`."""
