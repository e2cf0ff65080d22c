"""Thin services the API (and later the CLI) call: users and auth, bots, trading records, accounts.

They take a SQLAlchemy session and the acting user, raise the platform's error hierarchy, and know
nothing of HTTP (no FastAPI imports here).
"""
