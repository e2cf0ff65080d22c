"""The strategy API: declared parameters, signals, the guard around user code."""
