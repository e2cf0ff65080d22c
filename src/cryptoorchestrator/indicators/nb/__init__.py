"""Pure numba kernels behind the indicator wrappers (numpy, numba and math only)."""
