"""Structured, rotating, secret-redacting logs.

* The API writes ``<log_dir>/fastapi.log``; each bot writes ``<log_dir>/bot_<id>.log``; both rotate.
* Every record is one JSON object per line (time, level, logger, message, and any ``extra``
  fields), so ``tail -f logs/bot_123.log | jq`` and log shippers work without parsing.
* A filter masks secrets before anything is formatted: values of keys that look secret
  (``api_secret``, ``password``, ``token``...), bearer tokens, JWTs and any string registered with
  :func:`register_secret` (the platform registers its secret key and decrypted exchange keys).
"""

from __future__ import annotations

import collections
import json
import logging
import logging.handlers
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REDACTED = "***"

_SECRET_KEYS = re.compile(
    r"(?i)(api[_-]?secret|secret[_-]?key|secret|password|passwd|passphrase|token|api[_-]?key"
    r"|authorization|totp|mfa[_-]?code|backup[_-]?code|signature)"
)
_INLINE_PATTERNS = [
    # key=value and "key": "value" pairs whose key looks secret
    re.compile(
        r"(?i)((?:api[_-]?secret|secret[_-]?key|secret|password|passphrase|refresh[_-]?token"
        r"|access[_-]?token|token|api[_-]?key|signature)[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,}]+)"
    ),
    re.compile(r"(?i)(bearer\s+)([A-Za-z0-9._~+/=-]+)"),
    # JWTs anywhere
    re.compile(r"()(eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,})"),
]
# Only where a pattern could match: a key and its value (":" or "="), a bearer token, a JWT.
# Most logged values (amounts, ids, statuses) have none of these and skip the three patterns.
_MAYBE_SECRET = re.compile(r"[:=]|bearer|eyJ", re.IGNORECASE)
_known_secrets: set[str] = set()
# Longest first, rebuilt on registration (rare) instead of sorted on every call (each value
# of each record); replaced whole, so readers need no lock.
_known_sorted: tuple[str, ...] = ()
_known_lock = threading.Lock()

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def register_secret(value: str | None) -> None:
    """Mask every later occurrence of ``value`` in any log record (ignores short strings)."""
    if value and len(value) >= 6:
        global _known_sorted  # noqa: PLW0603 (one registry per process)
        with _known_lock:
            _known_secrets.add(value)
            _known_sorted = tuple(sorted(_known_secrets, key=len, reverse=True))


def redact(text: str) -> str:
    """Return ``text`` with registered secrets and secret-looking values masked."""
    for secret in _known_sorted:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if _MAYBE_SECRET.search(text) is None:
        return text
    for pattern in _INLINE_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def redact_value(key: str, value: Any) -> Any:
    """Mask ``value`` when ``key`` names a secret; recurse into mappings and lists."""
    if isinstance(value, dict):
        return {k: redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(key, v) for v in value]
    if _SECRET_KEYS.search(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    return value


class RedactingFilter(logging.Filter):
    """Rewrite a record's message, arguments and extra fields with secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drop the record."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, redact_value(key, value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as JSON."""
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload, default=str)


class _RotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating file handler that formats each record once and keeps the file's size itself.

    The standard one formats every record twice (once only to measure it against
    ``maxBytes``) and stats and seeks the file for each: most of a bot's logging cost, which
    fifty bots pay on every candle.  Records are JSON (ASCII), so characters count bytes.
    """

    _size = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record, rolling the file over first when it would exceed ``maxBytes``."""
        try:
            line = self.format(record) + self.terminator
            if self.stream is None:
                self.stream = self._open()
                self._size = self.stream.tell()  # appending: the size it has
            if self.maxBytes > 0 and self._size and self._size + len(line) >= self.maxBytes:
                self.doRollover()
                if self.stream is None:
                    self.stream = self._open()
                self._size = 0
            self.stream.write(line)
            self.flush()
            self._size += len(line)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def _rotating_handler(path: Path, level: str) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _RotatingFileHandler(
        path, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8", delay=True
    )
    handler.setLevel(level)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    return handler


class BackgroundFileHandler(logging.Handler):
    """A rotating JSON file handler whose formatting, redaction and writing run on a thread.

    The API logs every request; doing the JSON encoding, the redaction regexes and the file
    write on the event loop cost most of a liveness probe's time.  Records (or finished lines,
    see :meth:`write_line`) are appended to a deque (atomic, no lock taken per line); one
    writer thread owns the file, takes what has accumulated in batches, writes each batch at
    once and flushes once per batch.  Producers wake the writer only when it went idle, so a
    busy API pays one ``deque.append`` per line.  ``flush`` and ``close`` wait until
    everything queued so far is written.
    """

    _STOP = object()
    _BATCH_S = 0.02  # let a burst accumulate: one wake-up and one write per batch

    def __init__(self, path: Path, level: str) -> None:
        super().__init__(level)
        self.baseFilename = str(path)
        self._pending: collections.deque[Any] = collections.deque()
        self._idle = False  # the writer waits on _wake; the next producer sets it
        self._wake = threading.Event()
        self._target = _rotating_handler(path, level)
        self._open = True
        self._size = 0
        self._guard = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> None:
        # Append first, then look at _idle: the writer sets _idle before its last look at the
        # deque, so either it sees this item or this sees _idle and wakes it.
        self._pending.append(item)
        if self._idle:
            self._idle = False
            self._wake.set()

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record for the writer thread (dropped once the handler is closed)."""
        if self._open:
            self._put(record)

    def write_line(self, line: str) -> None:
        """Queue one finished JSON line, skipping record formatting and redaction.

        For lines built from structural fields only (the access log: method, path without its
        query, status, timing, client address, user id), which hold no secrets; it keeps the
        per-request cost of logging to a few microseconds.
        """
        if self._open:  # _put, inlined: this runs for every request
            self._pending.append(line)
            if self._idle:
                self._idle = False
                self._wake.set()

    def _take(self) -> list[Any]:
        """Wait for items, let a burst accumulate, and return what is queued (in order)."""
        pending = self._pending
        while not pending:
            self._wake.clear()
            self._idle = True
            if pending:  # appended before _idle was visible: no wake-up will come
                self._idle = False
                break
            self._wake.wait()
        newest = pending[-1]
        if newest is not self._STOP and not isinstance(newest, threading.Event):
            time.sleep(self._BATCH_S)  # lines or records: give the burst time to grow
        popleft = pending.popleft
        return [popleft() for _ in range(len(pending))]

    def _run(self) -> None:
        target = self._target
        while True:
            batch = self._take()
            stop = False
            markers: list[threading.Event] = []
            # Mostly finished lines (the access log): keep them as they are, in one pass.
            lines: list[str] = [entry for entry in batch if entry.__class__ is str]
            if len(lines) < len(batch):  # records, flush markers or the stop among them
                lines = []
                for entry in batch:
                    if entry.__class__ is str:
                        lines.append(entry)
                    elif entry is self._STOP:
                        stop = True
                    elif isinstance(entry, threading.Event):
                        markers.append(entry)  # a flush marker: set once the batch is on disk
                    elif entry.levelno >= target.level and target.filter(entry):
                        lines.append(target.format(entry))
            if lines:
                self._write_lines(lines)
            if target.stream is not None:  # type: ignore[attr-defined]
                target.stream.flush()  # type: ignore[attr-defined]
            for marker in markers:
                marker.set()
            if stop:
                return

    def _write_lines(self, lines: list[str]) -> None:
        """Append ``lines`` in as few writes as rotation allows (one per file, not per line)."""
        target = self._target
        max_bytes = target.maxBytes  # type: ignore[attr-defined]
        text = "\n".join(lines) + "\n"
        try:
            if target.stream is None:  # type: ignore[attr-defined]
                target.stream = target._open()  # type: ignore[attr-defined]  # noqa: SLF001
                self._size = target.stream.tell()  # type: ignore[attr-defined]
            if not max_bytes or self._size + len(text) <= max_bytes:
                # The whole batch fits in the current file (the usual case): one write, no
                # per-line size bookkeeping.
                target.stream.write(text)  # type: ignore[attr-defined]
                self._size += len(text)
                return
        except Exception:  # noqa: S110 (the line by line path below reports what fails)
            pass
        start = 0
        while start < len(lines):
            try:
                if target.stream is None:  # type: ignore[attr-defined]
                    target.stream = target._open()  # type: ignore[attr-defined]  # noqa: SLF001
                    self._size = target.stream.tell()  # type: ignore[attr-defined]
                # Take lines up to the rotation size (at least one, so a huge line is kept).
                end, size = start, self._size
                while end < len(lines):
                    grown = size + len(lines[end]) + 1
                    if max_bytes and grown > max_bytes and (end > start or self._size > 0):
                        break
                    size, end = grown, end + 1
                if end > start:
                    target.stream.write("\n".join(lines[start:end]) + "\n")  # type: ignore[attr-defined]
                    self._size, start = size, end
                if start < len(lines):
                    # The file is full: with delay=True the rollover leaves no stream open.
                    target.doRollover()  # type: ignore[attr-defined]
                    self._size = 0
            except Exception:  # a full disk must not kill the writer thread
                self.handleError(logging.makeLogRecord({"msg": lines[start]}))
                start += 1

    def flush(self) -> None:
        """Block until every record queued so far is in the file."""
        if not self._open or not self._thread.is_alive():
            return
        done = threading.Event()
        self._put(done)
        done.wait(timeout=10)

    def close(self) -> None:
        """Write what is queued and close the file (idempotent)."""
        with self._guard:
            if self._open:
                self._open = False
                self._put(self._STOP)
                self._thread.join(timeout=10)
                self._target.close()
        super().close()


def api_log_writer(log_dir: Path) -> BackgroundFileHandler | None:
    """Return the background handler writing ``<log_dir>/fastapi.log``, if installed."""
    target = str((log_dir / "fastapi.log").resolve())
    for handler in logging.getLogger("cryptoorchestrator").handlers:
        if isinstance(handler, BackgroundFileHandler) and handler.baseFilename == target:
            return handler
    return None


def flush_logs() -> None:
    """Write out every record queued by background handlers (tests, shutdown)."""
    for name in ("cryptoorchestrator", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.flush()


def setup_api_logging(log_dir: Path, level: str = "INFO") -> logging.Logger:
    """Send the API's and the platform's logs to ``<log_dir>/fastapi.log`` (rotating).

    One background handler serves the platform's loggers and uvicorn's error logger, so the
    file has a single writer.  ``uvicorn.access`` is left alone: the API's own access log
    (:class:`~cryptoorchestrator.api.middleware.AccessLog`) writes one line per request here
    already, and a handler on ``uvicorn.access`` would make uvicorn format a second line per
    request (its ``hasHandlers()`` check), even when started with ``--no-access-log``.
    """
    logger = logging.getLogger("cryptoorchestrator")
    target = (log_dir / "fastapi.log").resolve()
    existing = next(
        (h for h in logger.handlers if getattr(h, "baseFilename", None) == str(target)), None
    )
    handler = existing or BackgroundFileHandler(target, level)
    for name in ("cryptoorchestrator", "uvicorn.error"):
        other = logging.getLogger(name)
        if not any(getattr(h, "baseFilename", None) == str(target) for h in other.handlers):
            other.addHandler(handler)
    logger.setLevel(level)
    return logger


def bot_logger(bot_id: int | str, log_dir: Path, level: str = "INFO") -> logging.Logger:
    """Return the logger of one bot, writing to ``<log_dir>/bot_<id>.log`` (rotating).

    It also propagates to the ``cryptoorchestrator`` logger, so bot events appear in
    ``fastapi.log`` when the bot runs inside the API process.
    """
    logger = logging.getLogger(f"cryptoorchestrator.bot.{bot_id}")
    target = (log_dir / f"bot_{bot_id}.log").resolve()
    if not any(getattr(h, "baseFilename", None) == str(target) for h in logger.handlers):
        logger.addHandler(_rotating_handler(target, level))
    logger.setLevel(level)
    return logger


def tail(path: Path, lines: int = 100) -> list[str]:
    """Return the last ``lines`` lines of a log file (empty when it does not exist yet)."""
    if lines <= 0:
        return []
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            block = 8192
            data = b""
            while size > 0 and data.count(b"\n") <= lines:
                step = min(block, size)
                size -= step
                fh.seek(size)
                data = fh.read(step) + data
    except FileNotFoundError:
        return []
    return [line.decode("utf-8", "replace") for line in data.splitlines()[-lines:]]
