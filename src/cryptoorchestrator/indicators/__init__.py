"""Technical indicators as numba kernels, equal to TA-Lib's element by element."""
