"""``cryptoorch warmup``: compile the numba kernels now, with progress, not at first use."""

from __future__ import annotations

import os
from typing import Annotated

import typer


def warmup(
    jobs: Annotated[
        int, typer.Option("--jobs", min=1, help="Processes to compile in (default: up to 2).")
    ] = 0,
) -> None:
    """Compile (or load from numba's cache) every kernel the platform calls."""
    from cryptoorchestrator.strategies.warmup import warm_up

    warm_up(jobs or min(2, os.cpu_count() or 1))
