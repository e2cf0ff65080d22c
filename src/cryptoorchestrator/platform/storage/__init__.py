"""Database access: the SQLAlchemy 2 ORM, engines and sessions, Alembic migrations."""
