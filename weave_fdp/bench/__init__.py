"""Benchmarks (commands, not tests): the datapath comparison lives in ``datapath.py``."""
