"""``cryptoorch db``: apply and inspect database migrations, rotate the platform secret key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from cryptoorchestrator.platform.storage.integrity import CheckReport

app = typer.Typer(
    help="Database migrations, backups, restores and integrity checks.", no_args_is_help=True
)


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


@app.command()
def backup(
    dest: Path = typer.Argument(..., help="New folder to write the backup into."),
    verify: bool = typer.Option(
        False, "--verify", help="Restore into a scratch database and compare with the manifest."
    ),
    no_market_data: bool = typer.Option(
        False, "--no-market-data", help="Leave the Parquet market-data store out."
    ),
) -> None:
    """Back up the database (consistent while bots trade) and the market-data store."""
    from cryptoorchestrator.platform.errors import CryptoOrchError
    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.platform.storage import backup as backups

    settings = get_settings()
    try:
        result = backups.create_backup(
            settings, dest, market_data=not no_market_data, verify=verify
        )
    except CryptoOrchError as exc:
        typer.echo(f"backup failed: {exc}", err=True)
        raise typer.Exit(1) from None
    man = result.manifest
    rows = sum(t.rows for t in man.tables.values())
    typer.echo(
        f"backup of {_masked(settings.database_url)} written to {result.path}: revision "
        f"{man.schema_revision}, {len(man.tables)} tables, {rows} rows, {len(man.files)} files"
    )
    if result.verify is not None:
        typer.echo(result.verify.describe(), err=not result.verify.ok)
        if not result.verify.ok:
            raise typer.Exit(1)


@app.command()
def restore(
    source: Path = typer.Argument(..., help="Backup folder (made by `cryptoorch db backup`)."),
    verify: bool = typer.Option(
        False, "--verify", help="Compare the restored copy with the manifest before swapping."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Restore despite a newer schema, running bots or open connections.",
    ),
    no_market_data: bool = typer.Option(
        False, "--no-market-data", help="Leave the market-data store as it is."
    ),
    drop_previous: bool = typer.Option(
        False, "--drop-previous", help="Do not keep the replaced database beside the new one."
    ),
) -> None:
    """Replace the database with a backup (atomically), then upgrade it to this version."""
    from cryptoorchestrator.platform.errors import CryptoOrchError
    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.platform.storage import backup as backups

    settings = get_settings()
    try:
        result = backups.restore_backup(
            source,
            settings,
            force=force,
            verify=verify,
            market_data=not no_market_data,
            keep_previous=not drop_previous,
        )
    except CryptoOrchError as exc:
        typer.echo(f"restore failed: {exc}", err=True)
        raise typer.Exit(1) from None
    if result.verify is not None:
        typer.echo(result.verify.describe())
    typer.echo(
        f"restored {source} into {_masked(settings.database_url)}: backup revision "
        f"{result.restored_revision}, now {result.revision}; {result.market_files} "
        "market-data files"
    )
    if result.previous:
        typer.echo(f"the previous database is kept as {result.previous}")


@app.command()
def check(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    repair: bool = typer.Option(
        False, "--repair", help="Rebuild positions from their fills (nothing else is changed)."
    ),
) -> None:
    """Check the books' integrity; quarantine findings. Exit code 1 when anything is found."""
    import json

    from cryptoorchestrator.platform.errors import CryptoOrchError
    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.platform.storage import integrity

    try:
        report = integrity.run_check(get_settings(), repair=repair)
    except CryptoOrchError as exc:
        typer.echo(f"check failed: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=1))
    else:
        for change in report.repaired:
            typer.echo(f"repaired {change}")
        for f in report.findings:
            typer.echo(f"{f.kind}\t{f.table}\t{f.row_id}\t{f.reason}")
        typer.echo(
            f"{len(report.findings)} findings ({report.recorded} newly quarantined, "
            f"{report.resolved} resolved); see table integrity_findings"
        )
    if report.findings and not (repair and _all_repaired(report)):
        raise typer.Exit(1)


def _all_repaired(report: CheckReport) -> bool:
    """Whether ``--repair`` rebuilt every finding (all of them positions)."""
    return bool(report.repaired) and all(
        f.kind in ("position_mismatch", "position_missing") for f in report.findings
    )
