"""Bots without Ray: configuration, the status machine and the trading runtime.

``cluster.bot_actor.BotActor`` is a thin Ray shell around :class:`runtime.BotRuntime`.
"""
