"""One module per contender of `benchmarks/queue_throughput.py`: how it enqueues and consumes.

Every module enqueues with its library's own API (`produce`) and runs its consumers as separate
processes; every no-op job calls `Probe.record()`, so all contenders do the same work per job.
"""
