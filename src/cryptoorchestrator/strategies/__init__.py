"""Built-in trading strategies, each a ``Strategy`` subclass."""
