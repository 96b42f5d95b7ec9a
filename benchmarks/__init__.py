"""Benchmarks: how the queue compares with its peers on the same server and job count."""
