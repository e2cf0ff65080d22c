"""Backups that restore: a folder with the database, a manifest and the market-data store.

A backup is a folder::

    manifest.json          format, created_at (UTC), engine, Alembic revision, package version,
                           per-table row counts and content checksums, sha256 of every file
    database.sqlite3       SQLite: a page copy made by SQLite's online backup API
    database.dump          PostgreSQL: ``pg_dump --format=custom``
    market_data/...        the Parquet store's current files (dataset manifests, partitions,
                           quarantine files), unless ``market_data=False``

Consistency while bots write:

* SQLite: :meth:`sqlite3.Connection.backup` copies every page in one step under one read
  transaction (WAL lets writers go on meanwhile), and the manifest's counts and checksums are
  computed from the copy itself, so they describe exactly what the backup holds.
* PostgreSQL: a ``REPEATABLE READ`` transaction exports its snapshot (``pg_export_snapshot()``);
  ``pg_dump --snapshot=`` dumps that snapshot while the same transaction computes the
  manifest's counts and checksums, so dump and manifest agree to the row.

Checksums are dialect-neutral: every table's rows are read in primary-key order (text keys in
byte order, ``COLLATE "C"`` on PostgreSQL), every value normalised (exact decimals without
padding, timestamps as UTC ISO text, JSON with sorted keys, bytes as hex) and hashed as one JSON
line per row.  A SQLite backup and a PostgreSQL backup of the same rows have the same checksums.

Restores never leave a half-restored database: the backup is restored *beside* the target
(SQLite: a temporary file in the target's folder; PostgreSQL: a new database), checked and
migrated to the code's head there, and only then swapped in (SQLite: ``os.replace``, an atomic
rename; PostgreSQL: both ``ALTER DATABASE ... RENAME`` in one transaction).  A crash before the
swap leaves the target as it was; the previous database is kept beside it unless asked not to.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    Table,
    create_engine,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.elements import ColumnElement

from cryptoorchestrator.platform.errors import ConflictError, StorageError
from cryptoorchestrator.platform.notify.system import notify_backup
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import Base

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SQLITE_FILE = "database.sqlite3"
PG_FILE = "database.dump"
MARKET_DIR = "market_data"
#: Tables of the database that are not data: the migration bookkeeping (in the manifest as
#: ``schema_revision``) and SQLite's internal tables.
_SKIP_TABLES = {"alembic_version"}
_CHUNK = 1 << 20


log = logging.getLogger(__name__)


class BackupError(StorageError):
    """A backup could not be made, verified or restored (the message says what to do)."""


@dataclass(frozen=True)
class TableDigest:
    """Row count and content checksum of one table."""

    rows: int
    sha256: str


@dataclass(frozen=True)
class BackupManifest:
    """What ``manifest.json`` records about a backup."""

    format_version: int
    created_at: str
    engine: str
    schema_revision: str | None
    package_version: str
    tables: dict[str, TableDigest]
    files: dict[str, str]
    market_data: bool

    def to_json(self) -> str:
        """Return the manifest as indented JSON."""
        body = {
            "format_version": self.format_version,
            "created_at": self.created_at,
            "engine": self.engine,
            "schema_revision": self.schema_revision,
            "package_version": self.package_version,
            "tables": {
                k: {"rows": v.rows, "sha256": v.sha256} for k, v in sorted(self.tables.items())
            },
            "files": dict(sorted(self.files.items())),
            "market_data": self.market_data,
        }
        return json.dumps(body, indent=1)

    @classmethod
    def read(cls, folder: Path) -> BackupManifest:
        """Read ``folder/manifest.json``; raise :class:`BackupError` if it is not a backup."""
        path = Path(folder) / MANIFEST_NAME
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            version = int(raw["format_version"])
            if version > FORMAT_VERSION:
                raise BackupError(
                    f"{path}: backup format {version} is newer than this version reads "
                    f"({FORMAT_VERSION}); restore it with a newer cryptoorch"
                )
            return cls(
                format_version=version,
                created_at=str(raw["created_at"]),
                engine=str(raw["engine"]),
                schema_revision=raw["schema_revision"],
                package_version=str(raw["package_version"]),
                tables={
                    k: TableDigest(int(v["rows"]), str(v["sha256"]))
                    for k, v in raw["tables"].items()
                },
                files={str(k): str(v) for k, v in raw["files"].items()},
                market_data=bool(raw.get("market_data", False)),
            )
        except FileNotFoundError:
            raise BackupError(f"{folder} is not a backup: no {MANIFEST_NAME}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"unreadable backup manifest {path}: {exc}") from None


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of comparing a backup (or a restored copy) with its manifest."""

    files: list[str] = field(default_factory=list)
    tables: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every file and table matched."""
        return not self.files and not self.tables

    def describe(self) -> str:
        """One line per difference, naming the file or table."""
        lines = [f"file {name}: sha256 differs or file missing" for name in self.files]
        lines += [f"table {name}: {why}" for name, why in sorted(self.tables.items())]
        return "\n".join(lines) if lines else "backup verified: every file and table matches"


@dataclass(frozen=True)
class BackupResult:
    """A backup made: where, its manifest, and the verification if one was asked for."""

    path: Path
    manifest: BackupManifest
    verify: VerifyReport | None = None


@dataclass(frozen=True)
class RestoreResult:
    """A restore done: the revisions, the previous database kept, the market files copied."""

    restored_revision: str | None
    revision: str | None
    previous: str | None
    market_files: int
    verify: VerifyReport | None = None


# ----------------------------------------------------------------------------- checksums


def _norm_decimal(value: Decimal) -> str:
    if not value.is_finite():
        return str(value)
    if value == value.to_integral_value():
        return format(value.quantize(Decimal(1)), "f")
    return format(value.normalize(), "f")


def _norm(value: Any) -> Any:
    """A value as dialect-neutral JSON (see the module docstring)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return _norm_decimal(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return str(value)


def _data_tables(conn: Connection) -> list[Table]:
    """The database's tables, typed by the ORM where it knows them (their columns as stored)."""
    insp = inspect(conn)
    names = sorted(n for n in insp.get_table_names() if n not in _SKIP_TABLES)
    known = Base.metadata.tables
    out: list[Table] = []
    reflected = MetaData()
    for name in names:
        present = {c["name"] for c in insp.get_columns(name)}
        model = known.get(name)
        if model is not None and present <= set(model.columns.keys()):
            pk = set(model.primary_key.columns.keys())
            columns = [
                Column(c.name, c.type, primary_key=c.name in pk)
                for c in model.columns
                if c.name in present
            ]
            out.append(Table(name, MetaData(), *columns))
        else:
            out.append(Table(name, reflected, autoload_with=conn))
    return out


def table_digest(conn: Connection, table: Table) -> TableDigest:
    """Count and hash ``table``'s rows in primary-key order (see the module docstring)."""
    columns = sorted(table.columns, key=lambda c: c.name)
    keys = list(table.primary_key.columns) or columns
    order: list[ColumnElement[Any]] = []
    for col in keys:
        python_type = getattr(col.type, "python_type", None) if _has_python_type(col) else None
        if conn.dialect.name == "postgresql" and python_type is str:
            order.append(col.collate("C"))
        else:
            order.append(col)
    digest = hashlib.sha256()
    digest.update(json.dumps([c.name for c in columns]).encode() + b"\n")
    rows = 0
    stmt = select(*columns).order_by(*order)
    result = conn.execution_options(stream_results=True, yield_per=2000).execute(stmt)
    for row in result:
        digest.update(json.dumps([_norm(v) for v in row], separators=(",", ":")).encode())
        digest.update(b"\n")
        rows += 1
    return TableDigest(rows, digest.hexdigest())


def _has_python_type(col: Any) -> bool:
    try:
        col.type.python_type  # noqa: B018
    except NotImplementedError:
        return False
    return True


def database_digests(conn: Connection) -> dict[str, TableDigest]:
    """Return every data table's :class:`TableDigest` (as seen by ``conn``'s transaction)."""
    return {t.name: table_digest(conn, t) for t in _data_tables(conn)}


def compare_digests(
    expected: dict[str, TableDigest], actual: dict[str, TableDigest]
) -> dict[str, str]:
    """Return table -> what differs, for every table whose rows or checksum differ."""
    out: dict[str, str] = {}
    for name in sorted(set(expected) | set(actual)):
        want, got = expected.get(name), actual.get(name)
        if want is None:
            out[name] = "not in the manifest"
        elif got is None:
            out[name] = "missing from the database"
        elif want.rows != got.rows:
            out[name] = f"{got.rows} rows, manifest says {want.rows}"
        elif want.sha256 != got.sha256:
            out[name] = "content checksum differs from the manifest"
    return out


def _revision_of(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


# ------------------------------------------------------------------------------- files


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_files(folder: Path, manifest: BackupManifest) -> list[str]:
    """Return the backup's files whose sha256 differs from the manifest (or that are missing)."""
    bad = []
    for name, want in sorted(manifest.files.items()):
        path = folder / name
        if not path.is_file() or file_sha256(path) != want:
            bad.append(name)
    return bad


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _copy_market_data(data_dir: Path, dest: Path) -> list[Path]:
    """Copy every dataset's current files (its manifest, partitions, quarantine) into ``dest``.

    Partition files are immutable and uniquely named, and a dataset's ``_manifest.json`` is
    its atomic commit point: copying the manifest's bytes first, then the files it names,
    gives one whole version.  A writer's garbage collection may remove a named file
    meanwhile; the dataset is then copied again from its new manifest.
    """
    from cryptoorchestrator.platform.data.store import MANIFEST, QUARANTINE

    copied: list[Path] = []
    if not data_dir.is_dir():
        return copied
    for manifest in sorted(data_dir.glob(f"*/*/*/{MANIFEST}")):
        ddir = manifest.parent
        rel = ddir.relative_to(data_dir)
        for _attempt in range(5):
            try:
                raw = manifest.read_bytes()
                parts = [str(p["file"]) for p in json.loads(raw)["partitions"]]
                target = dest / rel
                target.mkdir(parents=True, exist_ok=True)
                names = []
                for name in parts:
                    shutil.copyfile(ddir / name, target / name)
                    names.append(name)
                if (ddir / QUARANTINE).is_file():
                    shutil.copyfile(ddir / QUARANTINE, target / QUARANTINE)
                    names.append(QUARANTINE)
                (target / MANIFEST).write_bytes(raw)
                names.append(MANIFEST)
                copied.extend(target / n for n in names)
                break
            except FileNotFoundError:
                # A writer replaced the version meanwhile: start the dataset over.
                shutil.rmtree(dest / rel, ignore_errors=True)
                continue
            except (ValueError, KeyError) as exc:
                raise BackupError(f"unreadable dataset manifest {manifest}: {exc}") from None
        else:
            raise BackupError(f"dataset {rel} kept changing while it was copied; run again")
    return copied


def _restore_market_data(folder: Path, data_dir: Path) -> int:
    """Put the backup's datasets into ``data_dir``: files first, each manifest last (atomic)."""
    from cryptoorchestrator.platform.data.store import MANIFEST

    src_root = folder / MARKET_DIR
    count = 0
    if not src_root.is_dir():
        return count
    for manifest in sorted(src_root.glob(f"*/*/*/{MANIFEST}")):
        rel = manifest.parent.relative_to(src_root)
        target = data_dir / rel
        target.mkdir(parents=True, exist_ok=True)
        for file in sorted(manifest.parent.iterdir()):
            if file.name == MANIFEST:
                continue
            tmp = target / f".{file.name}.{uuid.uuid4().hex[:8]}.tmp"
            shutil.copyfile(file, tmp)
            os.replace(tmp, target / file.name)
            count += 1
        tmp = target / f".{MANIFEST}.{uuid.uuid4().hex[:8]}.tmp"
        shutil.copyfile(manifest, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target / MANIFEST)
        _fsync_dir(target)
        count += 1
    return count


# ------------------------------------------------------------------------------ engines


def _engine_name(url: str) -> str:
    name = make_url(url).get_backend_name()
    if name not in ("sqlite", "postgresql"):
        raise BackupError(f"backups support sqlite and postgresql, not {name}")
    return name


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError(f"cannot back up the SQLite database {database!r}: give a file path")
    return Path(database)


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@contextlib.contextmanager
def _engine(url: str) -> Iterator[Engine]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def _digests_of(url: str) -> tuple[dict[str, TableDigest], str | None]:
    with _engine(url) as engine, engine.connect() as conn:
        return database_digests(conn), _revision_of(conn)


def _sqlite_copy(src: Path, dst: Path) -> None:
    """Copy a SQLite database page by page in one step (one consistent read transaction)."""
    source = sqlite3.connect(str(src), timeout=30)
    try:
        target = sqlite3.connect(str(dst))
        try:
            source.backup(target)
            # A self-contained file: no -wal beside it, whatever mode the source was in.
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
    finally:
        source.close()


# ---------------------------------------------------------------------------- PostgreSQL


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(
            f"{name} not found on PATH: install the PostgreSQL client tools (Debian/Ubuntu: "
            f"apt-get install postgresql-client) matching the server's major version"
        )
    return path


def _libpq(url: URL | str) -> tuple[str, dict[str, str]]:
    """A libpq connection URI without the password, and the environment carrying it."""
    parsed = make_url(url) if isinstance(url, str) else url
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    bare = parsed.set(drivername="postgresql", password=None)
    return bare.render_as_string(hide_password=False), env


def _run_tool(args: Sequence[str], env: dict[str, str], what: str) -> None:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        raise BackupError(f"{what} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def _pg_admin_url(url: str) -> URL:
    return make_url(url).set(database="postgres")


def _pg_admin(url: str) -> Engine:
    return create_engine(_pg_admin_url(url), poolclass=NullPool, isolation_level="AUTOCOMMIT")


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _side_name(database: str, tag: str) -> str:
    suffix = f"_{tag}_{uuid.uuid4().hex[:8]}"
    return database[: 63 - len(suffix)] + suffix


def _pg_backup(url: str, out: Path) -> tuple[dict[str, TableDigest], str | None]:
    """Dump ``url`` to ``out`` and compute the digests, both from one exported snapshot."""
    pg_dump = _tool("pg_dump")
    conninfo, env = _libpq(url)
    with _engine(url) as engine, engine.connect() as raw:
        conn = raw.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            conn.execute(text("SET TRANSACTION READ ONLY"))
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            args = [
                pg_dump,
                "--format=custom",
                f"--snapshot={snapshot}",
                "--no-owner",
                "--no-privileges",
                "--file",
                str(out),
                "--dbname",
                conninfo,
            ]
            # pg_dump runs beside this transaction: the snapshot lives as long as it does.
            proc = subprocess.Popen(  # noqa: S603
                args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            try:
                revision = _revision_of(conn)
                digests = database_digests(conn)
            finally:
                _, err = proc.communicate()
            if proc.returncode != 0:
                raise BackupError(f"pg_dump failed ({proc.returncode}): {err.strip()[-2000:]}")
    return digests, revision


def _pg_restore_into(url: str, database: str, dump: Path) -> str:
    """Create ``database`` on ``url``'s server and restore ``dump`` into it; return its URL."""
    pg_restore = _tool("pg_restore")
    target = make_url(url).set(database=database)
    admin = _pg_admin(url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {_quote_ident(database)}"))
    finally:
        admin.dispose()
    conninfo, env = _libpq(target)
    try:
        _run_tool(
            [
                pg_restore,
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--single-transaction",
                "--dbname",
                conninfo,
                str(dump),
            ],
            env,
            "pg_restore",
        )
    except BaseException:
        _pg_drop(url, database)
        raise
    return target.render_as_string(hide_password=False)


def _pg_drop(url: str, database: str) -> None:
    admin = _pg_admin(url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {_quote_ident(database)} WITH (FORCE)"))
    finally:
        admin.dispose()


# -------------------------------------------------------------------------------- backup


def _package_version() -> str:
    # The installed distribution's version: importing the top-level package would pull in
    # the SDK (and Ray) just to read a string.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cryptoorchestrator")
    except PackageNotFoundError:
        return "unknown"


def create_backup(
    settings: Settings, dest: Path | str, *, market_data: bool = True, verify: bool = False
) -> BackupResult:
    """Back up the settings' database (and market data) into the new folder ``dest``.

    The backup is written into a temporary folder beside ``dest`` and renamed to ``dest`` when
    complete, so a folder named ``dest`` is always a whole backup.

    Parameters
    ----------
    settings
        The database URL and the market-data folder (``data_dir``).
    dest
        A folder that does not exist yet (or is empty).
    market_data
        Copy the Parquet store too.
    verify
        Restore the backup into a scratch database and compare it with the manifest.

    Raises
    ------
    BackupError
        The destination is not empty, a client tool is missing, or the dump failed.
    """
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"backup destination {dest} exists and is not empty")
    engine = _engine_name(settings.database_url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        if engine == "sqlite":
            source = _sqlite_path(settings.database_url)
            if not source.is_file():
                raise BackupError(f"no SQLite database at {source}")
            _sqlite_copy(source, work / SQLITE_FILE)
            digests, revision = _digests_of(_sqlite_url(work / SQLITE_FILE))
            db_files = [work / SQLITE_FILE]
        else:
            digests, revision = _pg_backup(settings.database_url, work / PG_FILE)
            db_files = [work / PG_FILE]
        market_files = (
            _copy_market_data(Path(settings.data_dir), work / MARKET_DIR) if market_data else []
        )
        files = {p.relative_to(work).as_posix(): file_sha256(p) for p in db_files + market_files}
        manifest = BackupManifest(
            format_version=FORMAT_VERSION,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            engine=engine,
            schema_revision=revision,
            package_version=_package_version(),
            tables=digests,
            files=files,
            market_data=market_data,
        )
        (work / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        for path in work.rglob("*"):
            if path.is_file():
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
        if dest.exists():
            dest.rmdir()
        os.replace(work, dest)
        _fsync_dir(dest.parent)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        notify_backup(settings, dest, error=exc)
        raise
    notify_backup(settings, dest)
    report = verify_backup(dest, settings) if verify else None
    return BackupResult(dest, manifest, report)


def verify_backup(folder: Path | str, settings: Settings) -> VerifyReport:
    """Check the backup's files, restore it into a scratch database and compare the tables.

    SQLite backups are restored into a temporary file; PostgreSQL backups into a scratch
    database on the settings' server, dropped afterwards.
    """
    folder = Path(folder)
    manifest = BackupManifest.read(folder)
    bad_files = check_files(folder, manifest)
    if bad_files:
        return VerifyReport(files=bad_files)
    return VerifyReport(
        tables=compare_digests(manifest.tables, _scratch_digests(folder, manifest, settings))
    )


def _scratch_digests(
    folder: Path, manifest: BackupManifest, settings: Settings
) -> dict[str, TableDigest]:
    if manifest.engine == "sqlite":
        with tempfile.TemporaryDirectory(prefix="cryptoorch-verify-") as tmp:
            scratch = Path(tmp) / "scratch.sqlite3"
            _sqlite_copy(folder / SQLITE_FILE, scratch)
            return _digests_of(_sqlite_url(scratch))[0]
    if _engine_name(settings.database_url) != "postgresql":
        raise BackupError(
            "verifying a PostgreSQL backup needs a PostgreSQL server: set "
            "CRYPTOORCH_DATABASE_URL to one (a scratch database is created and dropped there)"
        )
    database = _side_name(make_url(settings.database_url).database or "cryptoorch", "verify")
    scratch_url = _pg_restore_into(settings.database_url, database, folder / PG_FILE)
    try:
        return _digests_of(scratch_url)[0]
    finally:
        _pg_drop(settings.database_url, database)


# ------------------------------------------------------------------------------- restore


def _revision_order() -> list[str]:
    """The code's revisions, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(db.MIGRATIONS_DIR))
    return [s.revision for s in reversed(list(script.walk_revisions()))]


def running_bots(url: str) -> list[str]:
    """Return ``"<id> <name>"`` of every bot marked Running in the database at ``url``."""
    from cryptoorchestrator.platform.model.enums import BotStatus

    with _engine(url) as engine, engine.connect() as conn:
        if not inspect(conn).has_table("bots"):
            return []
        rows = conn.execute(
            text("SELECT id, name FROM bots WHERE status = :s ORDER BY id"),
            {"s": BotStatus.RUNNING.value},
        )
        return [f"{r.id} {r.name}" for r in rows]


def _target_exists(url: str) -> bool:
    """Whether the target database exists (a missing one is simply created by the restore)."""
    if _engine_name(url) == "sqlite":
        path = _sqlite_path(url)
        return path.is_file() and path.stat().st_size > 0
    admin = _pg_admin(url)
    try:
        with admin.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :d"),
                {"d": make_url(url).database},
            ).first()
    finally:
        admin.dispose()
    return found is not None


def _target_revision(url: str) -> str | None:
    with _engine(url) as engine, engine.connect() as conn:
        return _revision_of(conn)


def check_restorable(folder: Path | str, settings: Settings, *, force: bool = False) -> list[str]:
    """Return the reasons a restore of ``folder`` over the settings' database is refused.

    Refused (unless ``force``): a backup whose schema revision is newer than the code's head
    (unknown to this version), a target database whose revision is newer than the backup's,
    and bots marked Running in the target.  An empty list: the restore may go ahead.
    """
    manifest = BackupManifest.read(Path(folder))
    if force:
        return []
    order = _revision_order()
    reasons: list[str] = []
    backup_rev = manifest.schema_revision
    if backup_rev is not None and backup_rev not in order:
        reasons.append(
            f"the backup's schema revision {backup_rev} is newer than this version's head "
            f"{order[-1] if order else None}: restore it with the version that made it "
            f"({manifest.package_version})"
        )
    url = settings.database_url
    if _target_exists(url):
        target_rev = _target_revision(url)
        if target_rev is not None:
            newer = target_rev not in order or (
                backup_rev in order and order.index(target_rev) > order.index(backup_rev)
            )
            if newer:
                reasons.append(
                    f"the target database is at schema revision {target_rev}, newer than the "
                    f"backup's {backup_rev}: restoring would downgrade it"
                )
        bots = running_bots(url)
        if bots:
            reasons.append("bots are marked Running (stop them first): " + ", ".join(bots))
    return reasons


def restore_backup(
    folder: Path | str,
    settings: Settings,
    *,
    force: bool = False,
    verify: bool = False,
    market_data: bool = True,
    keep_previous: bool = True,
) -> RestoreResult:
    """Restore a backup over the settings' database, then upgrade it to the code's head.

    Steps: the files' sha256 are checked; the refusals of :func:`check_restorable` apply
    unless ``force``; the backup is restored beside the target (SQLite: a temporary file in
    the target's folder; PostgreSQL: a new database on the same server), compared with the
    manifest when ``verify``, migrated to head, and only then swapped in: ``os.replace`` of the
    file (atomic), or both ``ALTER DATABASE ... RENAME`` in one transaction.  Any failure
    before the swap leaves the target untouched and removes the side copy.  The previous
    database is kept (``<file>.pre-restore-<stamp>`` / ``<db>_prerestore_<id>``) unless
    ``keep_previous`` is False.

    Raises
    ------
    BackupError
        A file's checksum differs, verification failed, or a tool is missing.
    ConflictError
        A refusal (newer schema, running bots, database in use), naming what to do.
    """
    folder = Path(folder)
    manifest = BackupManifest.read(folder)
    bad = check_files(folder, manifest)
    if bad:
        raise BackupError("backup files do not match their manifest checksums: " + ", ".join(bad))
    engine = _engine_name(settings.database_url)
    if engine != manifest.engine:
        raise BackupError(
            f"this is a {manifest.engine} backup and the database is {engine}: restore it "
            f"into a {manifest.engine} database"
        )
    reasons = check_restorable(folder, settings, force=force)
    if reasons:
        raise ConflictError("restore refused (use --force to override): " + "; ".join(reasons))
    # Pooled connections of this process would keep the old database open.
    db.dispose_engines()
    order = _revision_order()
    upgrade = manifest.schema_revision is None or manifest.schema_revision in order
    if engine == "sqlite":
        result = _restore_sqlite(folder, manifest, settings, verify, upgrade, keep_previous)
    else:
        result = _restore_pg(folder, manifest, settings, verify, upgrade, keep_previous, force)
    files = _restore_market_data(folder, Path(settings.data_dir)) if market_data else 0
    return RestoreResult(
        restored_revision=manifest.schema_revision,
        revision=result[0],
        previous=result[1],
        market_files=files,
        verify=result[2],
    )


def _verified(url: str, manifest: BackupManifest, verify: bool) -> VerifyReport | None:
    if not verify:
        return None
    report = VerifyReport(tables=compare_digests(manifest.tables, _digests_of(url)[0]))
    if not report.ok:
        raise BackupError("restored copy differs from the manifest:\n" + report.describe())
    return report


def _settings_for(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"database_url": url})


def _restore_sqlite(
    folder: Path,
    manifest: BackupManifest,
    settings: Settings,
    verify: bool,
    upgrade: bool,
    keep_previous: bool,
) -> tuple[str | None, str | None, VerifyReport | None]:
    target = _sqlite_path(settings.database_url)
    target.parent.mkdir(parents=True, exist_ok=True)
    side = target.with_name(f".{target.name}.restore-{uuid.uuid4().hex[:8]}")
    side_url = _sqlite_url(side)
    try:
        os.close(os.open(side, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        _sqlite_copy(folder / SQLITE_FILE, side)
        report = _verified(side_url, manifest, verify)
        revision = (
            db.upgrade(_settings_for(settings, side_url)) if upgrade else _target_revision(side_url)
        )
        _sqlite_self_contained(side)
        previous = None
        if target.exists():
            _sqlite_self_contained(target, in_use_error=True)
            if keep_previous:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                kept = target.with_name(f"{target.name}.pre-restore-{stamp}")
                os.link(target, kept)
                previous = str(kept)
        os.replace(side, target)
        _fsync_dir(target.parent)
    finally:
        for path in (side, *(side.with_name(side.name + s) for s in ("-wal", "-shm", "-journal"))):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return revision, previous, report


def _sqlite_self_contained(path: Path, *, in_use_error: bool = False) -> None:
    """Fold the WAL into the file and leave rollback-journal mode (needs the only connection).

    A ``-wal`` left beside a file that is then replaced would be replayed onto the new one;
    SQLite switches out of WAL only when no other connection has the file open, which is
    also how a database still in use (``serve``, bots) is detected.
    """
    conn = sqlite3.connect(str(path), timeout=5)
    try:
        mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
    except sqlite3.OperationalError as exc:
        mode = f"error: {exc}"
    finally:
        conn.close()
    if str(mode).lower() != "delete":
        message = (
            f"the SQLite database {path} is in use by another process (stop `cryptoorch serve` "
            "and every bot, then restore again)"
        )
        raise (ConflictError(message) if in_use_error else BackupError(message))


def _restore_pg(
    folder: Path,
    manifest: BackupManifest,
    settings: Settings,
    verify: bool,
    upgrade: bool,
    keep_previous: bool,
    force: bool,
) -> tuple[str | None, str | None, VerifyReport | None]:
    url = settings.database_url
    target = make_url(url).database
    if not target:
        raise BackupError("the PostgreSQL URL names no database")
    side = _side_name(target, "restore")
    side_url = _pg_restore_into(url, side, folder / PG_FILE)
    swapped = False
    try:
        report = _verified(side_url, manifest, verify)
        revision = (
            db.upgrade(_settings_for(settings, side_url)) if upgrade else _target_revision(side_url)
        )
        db.dispose_engines()
        exists = _target_exists(url)
        previous = _side_name(target, "prerestore")
        admin = _pg_admin(url)
        try:
            with admin.connect() as conn:
                others = conn.execute(
                    text(
                        "SELECT pid, coalesce(application_name, '') AS app FROM pg_stat_activity "
                        "WHERE datname = :d AND pid <> pg_backend_pid()"
                    ),
                    {"d": target},
                ).all()
                if others and not force:
                    apps = ", ".join(sorted({r.app or "?" for r in others}))
                    raise ConflictError(
                        f"database {target} has {len(others)} other connection(s) ({apps}): stop "
                        "`cryptoorch serve` and every bot, or use --force to disconnect them"
                    )
                for r in others:
                    conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": r.pid})
                # Both renames commit together: the target is the old or the new database.
                with _autocommit_tx(conn):
                    if exists:
                        conn.execute(
                            text(
                                f"ALTER DATABASE {_quote_ident(target)} "
                                f"RENAME TO {_quote_ident(previous)}"
                            )
                        )
                    conn.execute(
                        text(
                            f"ALTER DATABASE {_quote_ident(side)} RENAME TO {_quote_ident(target)}"
                        )
                    )
                swapped = True
        finally:
            admin.dispose()
        if not exists:
            return revision, None, report
        if not keep_previous:
            _pg_drop(url, previous)
            return revision, None, report
        return revision, previous, report
    finally:
        if not swapped:
            _pg_drop(url, side)


@contextlib.contextmanager
def _autocommit_tx(conn: Connection) -> Iterator[None]:
    """An explicit BEGIN ... COMMIT on an AUTOCOMMIT connection."""
    conn.exec_driver_sql("BEGIN")
    try:
        yield
    except BaseException:
        conn.exec_driver_sql("ROLLBACK")
        raise
    conn.exec_driver_sql("COMMIT")


# ------------------------------------------------------------------------------ rotation


def backup_rotating(
    settings: Settings, root: Path | str, *, keep: int, market_data: bool = True
) -> tuple[BackupResult, list[Path]]:
    """Write a backup into ``root/<UTC timestamp>`` and delete the oldest beyond ``keep``.

    For scheduled backups (a timer in ``serve``, cron): only folders holding a
    ``manifest.json`` count as backups, so half-written temporary folders and foreign files
    are never deleted.  Returns the new backup and the folders deleted.
    """
    if keep < 1:
        raise BackupError(f"keep must be at least 1, got {keep}")
    root = Path(root)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    result = create_backup(settings, root / stamp, market_data=market_data)
    backups = sorted(p for p in root.iterdir() if p.is_dir() and (p / MANIFEST_NAME).is_file())
    removed = backups[: max(0, len(backups) - keep)]
    for old in removed:
        shutil.rmtree(old)
    return result, removed


class BackupSchedule:
    """Scheduled backups for a head node: :func:`backup_rotating` every ``every_s`` seconds.

    A daemon thread of the serving process (not of an API worker: with several uvicorn workers
    there would be several schedules).  The first backup is taken one interval after
    :meth:`start`, so a restart loop cannot fill the disk.  A failed backup is logged and retried
    at the next tick; it never stops the schedule, the server or the bots.

    Parameters
    ----------
    settings
        Whose database and market-data store are backed up.
    root
        The folder of the backups (one ``<UTC stamp>`` folder each).
    every_s
        Seconds between backups (> 0).
    keep
        How many backups to keep (>= 1); older ones are deleted after a new one succeeds.
    market_data
        Whether each backup includes the Parquet store.
    """

    def __init__(
        self,
        settings: Settings,
        root: Path | str,
        *,
        every_s: float,
        keep: int,
        market_data: bool = True,
    ) -> None:
        if every_s <= 0:
            raise BackupError(f"the backup interval must be positive, got {every_s} s")
        if keep < 1:
            raise BackupError(f"keep must be at least 1, got {keep}")
        self.settings = settings
        self.root = Path(root)
        self.every_s = float(every_s)
        self.keep = keep
        self.market_data = market_data
        self.taken = 0
        self.failed = 0
        self.last: BackupResult | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> BackupResult | None:
        """Take one backup now and prune; return it, or None (logged) when it failed."""
        try:
            result, removed = backup_rotating(
                self.settings, self.root, keep=self.keep, market_data=self.market_data
            )
        except Exception:
            self.failed += 1
            log.exception("scheduled backup into %s failed", self.root)
            return None
        self.taken += 1
        self.last = result
        log.info("scheduled backup written to %s (%d older removed)", result.path, len(removed))
        return result

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.run_once()

    def start(self) -> None:
        """Start the schedule's thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="backups", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the schedule; a backup in progress is allowed to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
