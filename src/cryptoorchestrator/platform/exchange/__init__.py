"""Exchanges: the Binance-compatible simulator and the execution clients."""
