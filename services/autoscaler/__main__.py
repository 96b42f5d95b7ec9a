"""`python -m services.autoscaler`: scale the worker pools from stream lag until SIGTERM."""

from __future__ import annotations

import typer

from services.autoscaler.cli import run

if __name__ == "__main__":
    typer.run(run)
