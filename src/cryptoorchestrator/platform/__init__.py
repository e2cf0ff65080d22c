"""The domain: model, backtest engine, market data, execution, storage and services.

Import sub-modules explicitly (``from cryptoorchestrator.platform import model``); never bind the
name ``platform`` itself, which would shadow the standard library module.
"""
