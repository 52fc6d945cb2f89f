"""Benchmarks for ratewarden (scripts, not tests): run ``python bench/limiter_bench.py --help``."""
