"""The ``cryptoorch`` command line."""
