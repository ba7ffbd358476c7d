"""Benchmarks: the papers' evaluation protocols, a synthetic suite, speed and complexity."""
