"""The numba backtest engine and its results."""
