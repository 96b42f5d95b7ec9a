"""Real servers for the tests: Valkey, PostgreSQL and S3 (moto's server), started by the project."""

pytest_plugins = [
    "tests.fixtures.queue",
    "tests.fixtures.postgres",
    "tests.fixtures.s3",
    "tests.e2e_support",
]
