"""Built-in trading strategies, each a ``Strategy`` subclass, and the registry that finds them.

Nothing heavy is imported here: use ``strategies.registry.get_strategy(name)`` or the SDK.
"""
