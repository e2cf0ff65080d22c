"""Fixtures shared by the backtest kernel tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from cryptoorchestrator.platform.backtest import nb
from cryptoorchestrator.platform.backtest.engine import frozen

KernelCall = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]


def _call(
    kernel: Any,
    *args: Any,
    margin: tuple[float, float, bool] = (nb.MAX_GROSS_LEVERAGE, nb.MAINTENANCE_MARGIN, True),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Call ``kernel`` with ``args`` (``equity_out`` last) exactly as the engine does.

    Array inputs go read-only and every trailing margin argument is passed explicitly: numba
    compiles a kernel once per argument-type mix, and the engine's mix is the one the warm-up
    already compiled, so a test that matches it costs a call instead of a two-minute compile.
    """
    *inputs, equity_out = args
    typed = [frozen(a) if isinstance(a, np.ndarray) else a for a in inputs]
    return kernel(*typed, equity_out, float(margin[0]), float(margin[1]), bool(margin[2]))  # type: ignore[no-any-return]


@pytest.fixture
def call_kernel() -> KernelCall:
    """Return a function that calls a simulation kernel with the engine's argument types."""
    return _call
