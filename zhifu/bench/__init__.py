"""Benchmarks behind `zhifu bench ...`."""
