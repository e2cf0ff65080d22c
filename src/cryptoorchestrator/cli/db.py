"""``cryptoorch db``: apply and inspect database migrations, rotate the platform secret key."""

from __future__ import annotations

from pathlib import Path

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


@app.command("rotate-secret-key")
def rotate_secret_key(
    new_key_file: Path | None = typer.Option(
        None,
        "--new-key-file",
        help="File holding the new key (at least 32 characters); generated when omitted.",
    ),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Re-encrypt every stored secret under a new secret key and log every user out.

    Stop `cryptoorch serve` and every bot first.  With the key in ./var/secret.key (the
    default), the new key replaces it once the database is committed; with
    CRYPTOORCH_SECRET_KEY set, put the printed file's content there before restarting.
    """
    import os
    import secrets

    from cryptoorchestrator.platform.services.keys import rotate_secret_key as rotate
    from cryptoorchestrator.platform.settings import SECRET_KEY_FILE, get_settings
    from cryptoorchestrator.platform.storage.db import session_scope

    settings = get_settings()
    old_key = settings.resolved_secret_key()
    if new_key_file is not None:
        new_key = new_key_file.read_text(encoding="utf-8").strip()
    else:
        new_key = secrets.token_urlsafe(48)
    if not yes:
        typer.confirm(
            "Re-encrypt every stored secret and log every user out (stop the platform first)?",
            abort=True,
        )
    # The new key reaches the disk before the database changes, so a crash in between
    # leaves both keys on disk and the database still readable with the old one.
    staged = settings.var_dir / (SECRET_KEY_FILE + ".new")
    staged.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(new_key)
    with session_scope(settings) as session:
        report = rotate(session, old_key, new_key)
    if settings.secret_key is None:
        os.replace(staged, settings.var_dir / SECRET_KEY_FILE)
        where = f"{settings.var_dir / SECRET_KEY_FILE} (mode 0600)"
    else:
        where = f"{staged}: set CRYPTOORCH_SECRET_KEY to its content, then delete it"
    resealed = ", ".join(f"{k}: {n}" for k, n in sorted(report.secrets_resealed.items()))
    typer.echo(f"secrets re-encrypted ({resealed or 'none stored'}); new key in {where}")
    typer.echo(
        f"{report.refresh_tokens_revoked} refresh tokens revoked; "
        f"{report.users_logged_out} users must log in again"
    )
    if report.users_without_backup_codes:
        typer.echo(
            "MFA backup codes were deleted (they cannot be re-keyed); ask these users to make "
            "new ones: " + ", ".join(report.users_without_backup_codes)
        )


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
