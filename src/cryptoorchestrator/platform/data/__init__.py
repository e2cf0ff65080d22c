"""Market data: the Parquet OHLCV store, importers, validation, resampling and downloads.

Modules (import them directly; this package imports nothing heavy):

- ``store``: :class:`~cryptoorchestrator.platform.data.store.OhlcvStore` and ``load_ohlcv``
  (also ``cryptoorchestrator.load_ohlcv``).
- ``importers``: ``read_ohlcv_file`` for CSV, Parquet, freqtrade feather and JSON.
- ``validate``: ``validate_ohlcv`` (bad rows with reasons, gaps, outliers), ``fill_gaps``.
- ``resample``: ``resample_ohlcv`` (1m to any longer timeframe).
- ``download``: ``download_ohlcv`` and ``make_exchange`` (ccxt).

Only ``download`` imports the exchange package (its ccxt client factory); the exchange package,
its simulator included, never imports this one.
"""
