"""Market data: the Parquet OHLCV store, importers, validation, resampling and downloads."""
