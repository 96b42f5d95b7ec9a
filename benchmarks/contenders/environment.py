"""Environment variables through which the benchmark configures the consumer processes it starts.

Needed where a library's own CLI imports the app (taskiq, celery), so arguments cannot reach it.
"""

REDIS_URL_ENV = "BENCH_REDIS_URL"
PROBE_DIR_ENV = "BENCH_PROBE_DIR"
CELERY_PREFETCH_ENV = "BENCH_CELERY_PREFETCH"
