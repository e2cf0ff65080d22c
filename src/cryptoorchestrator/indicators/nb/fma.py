"""Fused multiply-add for numba kernels.

TA-Lib's x86-64 build selects FMA code paths (EMA, MACD, ATR, BBANDS, KAMA, SAR) when the CPU
has them, so its results round once where a plain ``a * b + c`` rounds twice. Python 3.11's
``math`` module has no ``fma`` and numba lowers none, so this module emits LLVM's ``llvm.fma.f64``
intrinsic: with FMA hardware it is one ``vfmadd`` instruction, without it LLVM calls libm's
correctly rounded ``fma``, so the value is the same on every machine.
"""

from typing import Any

from numba import njit
from numba.core import types
from numba.extending import intrinsic


@intrinsic
def _llvm_fma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.fma(*args)

    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def fma_nb(a: float, b: float, c: float) -> float:
    """Return ``a * b + c`` rounded once."""
    return _llvm_fma(float(a), float(b), float(c))  # type: ignore[call-arg]
