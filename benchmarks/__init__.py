"""Benchmarks: each prints figures measured on this machine; none is a test."""
