"""The Parquet OHLCV store: one dataset per exchange / symbol / timeframe.

Layout under ``data_dir``::

    binance/BTC-USDT/1h/
        _manifest.json            the current version: partition files, rows, first/last, gaps
        part-2021-1a2b3c4d.parquet  one immutable file per year (per month for 1s candles)
        _quarantine.parquet       rows that failed validation, with the reason (never in the data)
        .lock                     serializes writers

Every write produces new, uniquely named partition files (temporary file, fsync, rename) and then
replaces the manifest the same way, so the manifest switch is the single atomic commit point: a
crash before it leaves the old version intact, and readers that start from a manifest read either
the whole old or the whole new version (a reader that finds a file already cleaned away re-reads
the manifest and starts over).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cryptoorchestrator.platform.data.times import TimeLike, fmt_ms, optional_ms
from cryptoorchestrator.platform.errors import DataError, InvalidInputError, NotFoundError
from cryptoorchestrator.platform.model.ohlcv import DATASET_META, OHLCV_COLUMNS, OHLCV_SCHEMA
from cryptoorchestrator.platform.model.symbols import (
    normalize_symbol,
    symbol_from_path,
    symbol_to_path,
)
from cryptoorchestrator.platform.model.timeframe import timeframe_to_ms

try:  # POSIX advisory locks; on other systems writers are not serialized across processes
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

MANIFEST = "_manifest.json"
QUARANTINE = "_quarantine.parquet"
LOCK = ".lock"
ROW_GROUP_SIZE = 65_536
FORMAT_VERSION = 1

QUARANTINE_SCHEMA = pa.schema(
    [
        *[pa.field(f.name, f.type, nullable=True) for f in OHLCV_SCHEMA],
        pa.field("reason", pa.string()),
        pa.field("source", pa.string()),
        pa.field("quarantined_at", pa.int64()),
    ]
)

_EXCHANGE = re.compile(r"^[a-z0-9_]{1,40}$")
_BUNDLED_DIR = Path(__file__).with_name("bundled")
#: Datasets shipped inside the package: (exchange, symbol, timeframe) -> file in ``bundled/``.
BUNDLED: dict[tuple[str, str, str], str] = {
    ("binance", "BTC/USDT", "1h"): "binance_BTC-USDT_1h_2021-2022.parquet",
}


@dataclass(frozen=True)
class DatasetKey:
    """Normalized identity of a dataset."""

    exchange: str
    symbol: str
    timeframe: str

    @classmethod
    def of(cls, exchange: str, symbol: str, timeframe: str) -> DatasetKey:
        """Validate and normalize the three parts (``Binance``, ``btc-usdt``, ``1h``)."""
        ex = exchange.strip().lower()
        if not _EXCHANGE.match(ex):
            raise InvalidInputError(
                "exchange", f"malformed exchange id {exchange!r}", allowed="a ccxt id like binance"
            )
        timeframe_to_ms(timeframe)
        return cls(ex, normalize_symbol(symbol), timeframe)

    @property
    def tf_ms(self) -> int:
        """Candle length in milliseconds."""
        return timeframe_to_ms(self.timeframe)

    def __str__(self) -> str:
        return f"{self.exchange} {self.symbol} {self.timeframe}"


@dataclass(frozen=True)
class DatasetInfo:
    """Summary of one stored dataset, as ``cryptoorch data list`` shows it."""

    exchange: str
    symbol: str
    timeframe: str
    rows: int
    first: int | None
    last: int | None
    gaps: int
    filled: int = 0
    quarantined: int = 0
    version: int = 0
    path: Path | None = None

    @property
    def first_text(self) -> str:
        """First candle open time as text."""
        return fmt_ms(self.first) if self.first is not None else "-"

    @property
    def last_text(self) -> str:
        """Last candle open time as text."""
        return fmt_ms(self.last) if self.last is not None else "-"


@dataclass(frozen=True)
class WriteResult:
    """What a write changed."""

    rows_before: int
    rows_after: int
    rows_in: int
    overlapping: int

    @property
    def rows_added(self) -> int:
        """Rows the dataset grew by."""
        return self.rows_after - self.rows_before


@dataclass
class _Manifest:
    version: int = 0
    partitions: list[dict[str, Any]] = field(default_factory=list)
    filled: int = 0
    quarantined: int = 0

    @property
    def rows(self) -> int:
        return sum(int(p["rows"]) for p in self.partitions)

    def gaps(self, tf_ms: int) -> int:
        total = sum(int(p["gaps"]) for p in self.partitions)
        for prev, nxt in zip(self.partitions, self.partitions[1:], strict=False):
            if int(nxt["first"]) - int(prev["last"]) > tf_ms:
                total += 1
        return total


def _partition_keys(ts: np.ndarray, tf_ms: int) -> np.ndarray:
    unit = "M" if tf_ms < 60_000 else "Y"
    return ts.astype("datetime64[ms]").astype(f"datetime64[{unit}]").astype(np.int64)


def _partition_name(key: int, tf_ms: int) -> str:
    if tf_ms < 60_000:
        return f"{1970 + key // 12:04d}-{key % 12 + 1:02d}"
    return f"{1970 + key:04d}"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets us open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _atomic_write_table(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, row_group_size=ROW_GROUP_SIZE, compression="snappy")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def as_ohlcv_table(table: pa.Table, *, what: str = "table") -> pa.Table:
    """Return ``table`` with exactly the OHLCV columns, cast to :data:`OHLCV_SCHEMA`.

    Raises
    ------
    DataError
        If a column is missing, cannot be cast, or holds nulls.
    """
    missing = [c for c in OHLCV_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(
            f"{what} lacks column(s) {', '.join(missing)}; expected {', '.join(OHLCV_COLUMNS)}"
        )
    arrays = []
    for f in OHLCV_SCHEMA:
        col = table.column(f.name)
        if col.null_count:
            raise DataError(f"{what}: column {f.name} has {col.null_count} null value(s)")
        try:
            arrays.append(col.cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"{what}: column {f.name} cannot be read as {f.type}: {exc}") from None
    return pa.Table.from_arrays(arrays, schema=OHLCV_SCHEMA)


def count_gaps(ts: np.ndarray, tf_ms: int) -> int:
    """Return how many holes longer than one candle a sorted timestamp array has."""
    return int(np.count_nonzero(np.diff(ts) > tf_ms)) if len(ts) > 1 else 0


class OhlcvStore:
    """Parquet store of OHLCV datasets under ``data_dir`` (default: the settings' data_dir).

    Parameters
    ----------
    data_dir
        Root folder of the store; created on first write.
    """

    def __init__(self, data_dir: Path | str | None = None) -> None:
        if data_dir is None:
            from cryptoorchestrator.platform.settings import get_settings

            data_dir = get_settings().data_dir
        self.root = Path(data_dir)

    # ----------------------------------------------------------------------------------- paths
    def dataset_dir(self, exchange: str, symbol: str, timeframe: str) -> Path:
        """Return the folder of a dataset (it may not exist)."""
        key = DatasetKey.of(exchange, symbol, timeframe)
        return self.root / key.exchange / symbol_to_path(key.symbol) / key.timeframe

    def quarantine_path(self, exchange: str, symbol: str, timeframe: str) -> Path:
        """Return the path of a dataset's quarantine file."""
        return self.dataset_dir(exchange, symbol, timeframe) / QUARANTINE

    # -------------------------------------------------------------------------------- manifest
    @staticmethod
    def _read_manifest(ddir: Path) -> _Manifest | None:
        try:
            raw = json.loads((ddir / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DataError(f"unreadable dataset manifest {ddir / MANIFEST}: {exc}") from None
        return _Manifest(
            version=int(raw["version"]),
            partitions=list(raw["partitions"]),
            filled=int(raw.get("filled", 0)),
            quarantined=int(raw.get("quarantined", 0)),
        )

    @staticmethod
    def _write_manifest(ddir: Path, key: DatasetKey, man: _Manifest) -> None:
        first = man.partitions[0]["first"] if man.partitions else None
        last = man.partitions[-1]["last"] if man.partitions else None
        body = {
            "format": FORMAT_VERSION,
            "exchange": key.exchange,
            "symbol": key.symbol,
            "timeframe": key.timeframe,
            "version": man.version,
            "rows": man.rows,
            "first": first,
            "last": last,
            "gaps": man.gaps(key.tf_ms),
            "filled": man.filled,
            "quarantined": man.quarantined,
            "partitions": man.partitions,
        }
        _atomic_write_bytes(ddir / MANIFEST, json.dumps(body, indent=1).encode())

    @contextlib.contextmanager
    def _lock(self, ddir: Path) -> Iterator[None]:
        ddir.mkdir(parents=True, exist_ok=True)
        with open(ddir / LOCK, "a+b") as fh:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # ----------------------------------------------------------------------------------- query
    def exists(self, exchange: str, symbol: str, timeframe: str) -> bool:
        """Return whether the dataset has been written at least once."""
        return (self.dataset_dir(exchange, symbol, timeframe) / MANIFEST).is_file()

    def info(self, exchange: str, symbol: str, timeframe: str) -> DatasetInfo | None:
        """Return the summary of a dataset, or ``None`` if it is not stored."""
        key = DatasetKey.of(exchange, symbol, timeframe)
        ddir = self.dataset_dir(exchange, symbol, timeframe)
        man = self._read_manifest(ddir)
        if man is None:
            return None
        return DatasetInfo(
            exchange=key.exchange,
            symbol=key.symbol,
            timeframe=key.timeframe,
            rows=man.rows,
            first=int(man.partitions[0]["first"]) if man.partitions else None,
            last=int(man.partitions[-1]["last"]) if man.partitions else None,
            gaps=man.gaps(key.tf_ms),
            filled=man.filled,
            quarantined=man.quarantined,
            version=man.version,
            path=ddir,
        )

    def list_datasets(self) -> list[DatasetInfo]:
        """Return every stored dataset, sorted by exchange, symbol and timeframe."""
        out: list[DatasetInfo] = []
        if not self.root.is_dir():
            return out
        for manifest in sorted(self.root.glob(f"*/*/*/{MANIFEST}")):
            ddir = manifest.parent
            try:
                info = self.info(
                    ddir.parent.parent.name, symbol_from_path(ddir.parent.name), ddir.name
                )
            except InvalidInputError:
                continue  # a foreign folder inside data_dir is not ours to list
            if info is not None:
                out.append(info)
        return out

    def read(
        self,
        exchange: str,
        symbol: str,
        timeframe: str,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Return the bars with ``start <= timestamp < end`` (both optional).

        Only the partitions and row groups that overlap the range are read, memory-mapped.

        Raises
        ------
        NotFoundError
            If the dataset is not stored.
        """
        ddir = self.dataset_dir(exchange, symbol, timeframe)
        lo = optional_ms(start, field="start")
        hi = optional_ms(end, field="end")
        if lo is not None and hi is not None and hi < lo:
            raise InvalidInputError("end", f"end {fmt_ms(hi)} is before start {fmt_ms(lo)}")
        cols = list(OHLCV_COLUMNS) if columns is None else list(columns)
        bad = [c for c in cols if c not in OHLCV_COLUMNS]
        if bad:
            raise InvalidInputError("columns", f"unknown column(s) {bad}", allowed=OHLCV_COLUMNS)
        for attempt in range(20):
            man = self._read_manifest(ddir)
            if man is None:
                raise NotFoundError(
                    f"no stored data for {DatasetKey.of(exchange, symbol, timeframe)} in "
                    f"{self.root}; run `cryptoorch data download` or `cryptoorch data import`"
                )
            try:
                return self._read_version(ddir, man, lo, hi, cols)
            except FileNotFoundError:
                # A writer replaced the version we started from; start over from the new one.
                time.sleep(0.005 * (attempt + 1))
        raise DataError(f"dataset {ddir} keeps changing under the reader; try again")

    @staticmethod
    def _read_version(
        ddir: Path, man: _Manifest, lo: int | None, hi: int | None, cols: list[str]
    ) -> pa.Table:
        schema = pa.schema([OHLCV_SCHEMA.field(c) for c in cols])
        pieces: list[pa.Table] = []
        # Open every needed file first: once open, a file survives the writer's clean-up.
        files: list[tuple[pq.ParquetFile, dict[str, Any]]] = []
        for part in man.partitions:
            if (lo is not None and int(part["last"]) < lo) or (
                hi is not None and int(part["first"]) >= hi
            ):
                continue
            files.append((pq.ParquetFile(ddir / part["file"], memory_map=True), part))
        read_cols = cols if "timestamp" in cols else ["timestamp", *cols]
        for pf, part in files:
            inside = (lo is None or int(part["first"]) >= lo) and (
                hi is None or int(part["last"]) < hi
            )
            if inside:
                pieces.append(pf.read(columns=cols))
                continue
            md = pf.metadata
            ts_idx = pf.schema_arrow.get_field_index("timestamp")
            groups = []
            for g in range(md.num_row_groups):
                st = md.row_group(g).column(ts_idx).statistics
                if st is not None and st.has_min_max:
                    if (lo is not None and st.max < lo) or (hi is not None and st.min >= hi):
                        continue
                groups.append(g)
            if not groups:
                continue
            tbl = pf.read_row_groups(groups, columns=read_cols)
            ts = tbl.column("timestamp").to_numpy()
            a = 0 if lo is None else int(np.searchsorted(ts, lo, side="left"))
            b = len(ts) if hi is None else int(np.searchsorted(ts, hi, side="left"))
            pieces.append(tbl.slice(a, b - a).select(cols))
        if not pieces:
            return schema.empty_table()
        return pa.concat_tables(pieces).cast(schema)

    def read_quarantine(self, exchange: str, symbol: str, timeframe: str) -> pa.Table:
        """Return the quarantined rows of a dataset (empty if none)."""
        path = self.quarantine_path(exchange, symbol, timeframe)
        if not path.is_file():
            return QUARANTINE_SCHEMA.empty_table()
        return pq.read_table(path)

    # ----------------------------------------------------------------------------------- write
    def write(
        self,
        exchange: str,
        symbol: str,
        timeframe: str,
        table: pa.Table,
        *,
        mode: Literal["append", "replace"] = "append",
        prefer: Literal["new", "old"] = "new",
        filled: int = 0,
    ) -> WriteResult:
        """Merge ``table`` into the dataset atomically and return what changed.

        Parameters
        ----------
        table
            Bars with the OHLCV columns; their timestamps must be unique and on the timeframe
            grid (run :func:`~cryptoorchestrator.platform.data.validate.validate_ohlcv` first).
        mode
            ``"append"`` merges with the stored bars, deduplicating by timestamp; ``"replace"``
            makes ``table`` the whole dataset.
        prefer
            Which bar wins when a timestamp is both stored and in ``table``.
        filled
            How many of the rows are synthetic gap fills (recorded in the manifest).

        Raises
        ------
        DataError
            If ``table`` has the wrong schema, duplicate or off-grid timestamps, or non-finite
            values; nothing is written then.
        """
        key = DatasetKey.of(exchange, symbol, timeframe)
        if mode not in ("append", "replace"):
            raise InvalidInputError("mode", f"unknown mode {mode!r}", allowed=("append", "replace"))
        if prefer not in ("new", "old"):
            raise InvalidInputError("prefer", f"unknown value {prefer!r}", allowed=("new", "old"))
        new = self._checked(as_ohlcv_table(table, what=f"bars for {key}"), key)
        ddir = self.dataset_dir(exchange, symbol, timeframe)
        tf_ms = key.tf_ms
        with self._lock(ddir):
            man = self._read_manifest(ddir) or _Manifest()
            rows_before = man.rows
            new_keys = _partition_keys(new.column("timestamp").to_numpy(), tf_ms)
            by_key = {int(k): new.filter(pa.array(new_keys == k)) for k in np.unique(new_keys)}
            old_parts = {self._part_key(p): p for p in man.partitions}
            keep: dict[int, dict[str, Any]] = {} if mode == "replace" else dict(old_parts)
            overlapping = 0
            written: list[str] = []
            try:
                for k, piece in by_key.items():
                    if mode == "append" and k in old_parts:
                        old = pq.read_table(ddir / old_parts[k]["file"], memory_map=True)
                        piece, overlap = _merge(old, piece, prefer)
                        overlapping += overlap
                    name = f"part-{_partition_name(k, tf_ms)}-{uuid.uuid4().hex[:8]}.parquet"
                    _atomic_write_table(ddir / name, piece)
                    written.append(name)
                    ts = piece.column("timestamp").to_numpy()
                    keep[k] = {
                        "key": _partition_name(k, tf_ms),
                        "file": name,
                        "rows": len(ts),
                        "first": int(ts[0]),
                        "last": int(ts[-1]),
                        "gaps": count_gaps(ts, tf_ms),
                    }
                new_man = _Manifest(
                    version=man.version + 1,
                    partitions=[keep[k] for k in sorted(keep)],
                    filled=(0 if mode == "replace" else man.filled) + filled,
                    quarantined=man.quarantined,
                )
                self._write_manifest(ddir, key, new_man)
            except BaseException:
                for name in written:  # the old manifest still rules; drop the orphans
                    (ddir / name).unlink(missing_ok=True)
                raise
            self._collect_garbage(ddir, new_man)
        return WriteResult(
            rows_before=rows_before,
            rows_after=new_man.rows,
            rows_in=new.num_rows,
            overlapping=overlapping,
        )

    def quarantine(
        self,
        exchange: str,
        symbol: str,
        timeframe: str,
        bad: pa.Table,
        *,
        source: str,
    ) -> int:
        """Append rows with a ``reason`` column to the dataset's quarantine file; return count.

        The file keeps the rows exactly as received, plus where they came from and when.
        """
        if bad.num_rows == 0:
            return 0
        key = DatasetKey.of(exchange, symbol, timeframe)
        ddir = self.dataset_dir(exchange, symbol, timeframe)
        now = int(time.time() * 1000)
        cols = [bad.column(f.name).cast(f.type) for f in OHLCV_SCHEMA]
        cols.append(bad.column("reason").cast(pa.string()))
        cols.append(pa.array([source] * bad.num_rows, pa.string()))
        cols.append(pa.array([now] * bad.num_rows, pa.int64()))
        add = pa.Table.from_arrays(cols, schema=QUARANTINE_SCHEMA)
        with self._lock(ddir):
            path = ddir / QUARANTINE
            if path.is_file():
                add = pa.concat_tables([pq.read_table(path).cast(QUARANTINE_SCHEMA), add])
            _atomic_write_table(path, add)
            man = self._read_manifest(ddir)
            if man is not None:
                man.quarantined += bad.num_rows
                self._write_manifest(ddir, key, man)
        return bad.num_rows

    # --------------------------------------------------------------------------------- helpers
    @staticmethod
    def _part_key(part: dict[str, Any]) -> int:
        text = str(part["key"])
        if "-" in text:
            y, m = text.split("-")
            return (int(y) - 1970) * 12 + int(m) - 1
        return int(text) - 1970

    @staticmethod
    def _checked(table: pa.Table, key: DatasetKey) -> pa.Table:
        ts = table.column("timestamp").to_numpy()
        order = np.argsort(ts, kind="stable")
        if np.any(order != np.arange(len(ts))):
            table = table.take(pa.array(order))
            ts = ts[order]
        dup = np.nonzero(np.diff(ts) == 0)[0]
        if len(dup):
            raise DataError(
                f"bars for {key} repeat timestamp {fmt_ms(int(ts[dup[0]]))} "
                f"({len(dup)} duplicate(s)); validate them first"
            )
        from cryptoorchestrator.platform.data.validate import grid_offset_ms

        off = (ts - grid_offset_ms(key.timeframe)) % key.tf_ms != 0
        if off.any():
            raise DataError(
                f"bars for {key}: {int(off.sum())} timestamp(s) off the {key.timeframe} grid, "
                f"first {fmt_ms(int(ts[np.argmax(off)]))}"
            )
        for name in OHLCV_COLUMNS[1:]:
            if not np.isfinite(table.column(name).to_numpy()).all():
                raise DataError(f"bars for {key}: column {name} has NaN or infinite values")
        return table

    @staticmethod
    def _collect_garbage(ddir: Path, man: _Manifest) -> None:
        live = {p["file"] for p in man.partitions}
        for path in ddir.glob("part-*.parquet"):
            if path.name not in live:
                path.unlink(missing_ok=True)
        for path in ddir.glob(".*.tmp-*"):
            path.unlink(missing_ok=True)


def _merge(old: pa.Table, new: pa.Table, prefer: str) -> tuple[pa.Table, int]:
    """Return the union of two bar tables deduplicated by timestamp, and the overlap count."""
    old = as_ohlcv_table(old, what="stored partition")
    first, second = (new, old) if prefer == "new" else (old, new)
    both = pa.concat_tables([first, second])
    ts = both.column("timestamp").to_numpy()
    order = np.argsort(ts, kind="stable")
    ts_sorted = ts[order]
    keep = np.ones(len(ts_sorted), dtype=bool)
    keep[1:] = ts_sorted[1:] != ts_sorted[:-1]  # stable sort puts the preferred copy first
    overlap = int(len(ts_sorted) - keep.sum())
    return both.take(pa.array(order[keep])), overlap


def load_ohlcv(
    exchange: str,
    symbol: str,
    timeframe: str,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    data_dir: Path | str | None = None,
) -> pa.Table:
    """Return stored OHLCV bars as a pyarrow Table with :data:`OHLCV_SCHEMA`.

    Parameters
    ----------
    exchange, symbol, timeframe
        The dataset, e.g. ``"binance", "BTC/USDT", "1h"``.
    start, end
        Optional range of candle open times, ``start`` inclusive, ``end`` exclusive: a
        ``'YYYY-MM-DD'`` or ISO string (UTC when no zone is given), a datetime, or epoch ms.
    data_dir
        Store root; defaults to ``get_settings().data_dir``.

    The table's schema metadata names the dataset (:data:`DATASET_META` keys), which
    ``co.backtest`` reads when no ``symbol``/``timeframe`` is given.

    Notes
    -----
    When the store lacks the dataset and it is one the package ships (Binance spot BTC/USDT 1h,
    2021-01-01 to 2023-01-01, see ``platform/data/bundled/SOURCE.md``), the store is first
    seeded from that bundled slice, so demos work offline on a fresh machine.

    Raises
    ------
    NotFoundError
        If the dataset is neither stored nor bundled.
    InvalidInputError
        If an argument is malformed or ``end`` is before ``start``.
    """
    store = OhlcvStore(data_dir)
    key = DatasetKey.of(exchange, symbol, timeframe)
    if not store.exists(key.exchange, key.symbol, key.timeframe):
        seed_bundled(store, key.exchange, key.symbol, key.timeframe)
    table = store.read(key.exchange, key.symbol, key.timeframe, start, end)
    # The dataset travels with the bars (zero-copy), so a backtest of them names its symbol.
    meta = dict(table.schema.metadata or {})
    meta.update(
        {
            DATASET_META["exchange"]: key.exchange.encode(),
            DATASET_META["symbol"]: key.symbol.encode(),
            DATASET_META["timeframe"]: key.timeframe.encode(),
        }
    )
    return table.replace_schema_metadata(meta)


def bundled_candles(exchange: str, symbol: str, timeframe: str) -> pa.Table:
    """Return the slice of a dataset the package ships, whatever the store holds.

    Raises
    ------
    NotFoundError
        If no slice of that dataset ships (see :data:`BUNDLED`).
    """
    key = DatasetKey.of(exchange, symbol, timeframe)
    name = BUNDLED.get((key.exchange, key.symbol, key.timeframe))
    if name is None:
        shipped = ", ".join(f"{e}:{s}:{t}" for e, s, t in BUNDLED)
        raise NotFoundError(
            f"no bundled candles for {key.exchange}:{key.symbol}:{key.timeframe} "
            f"(shipped: {shipped})"
        )
    return pq.read_table(_BUNDLED_DIR / name)


def seed_bundled(store: OhlcvStore, exchange: str, symbol: str, timeframe: str) -> bool:
    """Write the bundled slice of a dataset into ``store`` if one ships; return whether it did."""
    key = DatasetKey.of(exchange, symbol, timeframe)
    name = BUNDLED.get((key.exchange, key.symbol, key.timeframe))
    if name is None:
        return False
    table = pq.read_table(_BUNDLED_DIR / name)
    ddir = store.dataset_dir(key.exchange, key.symbol, key.timeframe)
    with store._lock(ddir):
        # Another process may have seeded (or downloaded) it while we waited for the lock.
        if store.exists(key.exchange, key.symbol, key.timeframe):
            return False
    store.write(key.exchange, key.symbol, key.timeframe, table, mode="append")
    return True
