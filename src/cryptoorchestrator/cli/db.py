"""``cryptoorch db``: apply and inspect database migrations."""

from __future__ import annotations

import typer

app = typer.Typer(help="Database migrations.", no_args_is_help=True)


@app.command()
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.platform.storage import db

    settings = get_settings()
    rev = db.upgrade(settings, revision)
    typer.echo(f"database {_masked(settings.database_url)} at revision {rev}")


@app.command()
def downgrade(
    revision: str = typer.Argument(..., help="Target revision, e.g. -1 or base."),
) -> None:
    """Revert migrations down to REVISION."""
    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.platform.storage import db

    rev = db.downgrade(get_settings(), revision)
    typer.echo(f"database at revision {rev or 'base (empty)'}")


@app.command()
def current() -> None:
    """Show the database's revision and the newest one this version ships."""
    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.platform.storage import db

    settings = get_settings()
    rev = db.current_revision(settings)
    head = db.head_revision()
    state = "up to date" if rev == head else "needs `cryptoorch db upgrade`"
    typer.echo(
        f"database {_masked(settings.database_url)}: {rev or 'empty'} (head {head}, {state})"
    )


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
