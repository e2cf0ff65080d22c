"""Structured logs: JSON lines, per-bot files, rotation handlers and secret redaction."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cryptoorchestrator.platform.logs import (
    bot_logger,
    redact,
    redact_value,
    register_secret,
    setup_api_logging,
    tail,
)


def _flush(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        handler.flush()


def test_bot_log_is_json_lines_in_its_own_file(tmp_path: Path) -> None:
    logger = bot_logger(123, tmp_path)
    logger.info("status changed", extra={"status": "Running", "reason": "started"})
    _flush(logger)
    lines = (tmp_path / "bot_123.log").read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["status"] == "Running"
    assert record["level"] == "INFO"
    assert record["logger"] == "cryptoorchestrator.bot.123"


def test_secrets_never_reach_the_file(tmp_path: Path) -> None:
    register_secret("MY-EXCHANGE-SECRET-42")
    logger = setup_api_logging(tmp_path)
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXZhbHVl"
    logger.warning(
        "login with password=hunter2 header Bearer %s secret MY-EXCHANGE-SECRET-42",
        jwt,
        extra={"api_secret": "abc123456", "params": {"apiKey": "k-123456", "symbol": "BTC/USDT"}},
    )
    _flush(logger)
    text = (tmp_path / "fastapi.log").read_text()
    for leaked in ("hunter2", jwt, "MY-EXCHANGE-SECRET-42", "abc123456", "k-123456"):
        assert leaked not in text
    record = json.loads(text.splitlines()[-1])
    assert record["params"]["symbol"] == "BTC/USDT"


def test_redact_helpers() -> None:
    assert redact("url?signature=deadbeef&x=1") == "url?signature=***&x=1"
    assert redact_value("password", "p") == "***"
    assert redact_value("symbol", "BTC/USDT") == "BTC/USDT"


def test_tail_returns_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("".join(f"line {i}\n" for i in range(20000)))
    assert tail(path, 3) == ["line 19997", "line 19998", "line 19999"]
    assert tail(tmp_path / "missing.log", 3) == []


def test_background_writer_keeps_order_and_flushes(tmp_path: Path) -> None:
    from cryptoorchestrator.platform.logs import BackgroundFileHandler

    handler = BackgroundFileHandler(tmp_path / "fastapi.log", "INFO")
    logger = logging.getLogger("cryptoorchestrator.test.background")
    logger.addHandler(handler)
    try:
        for i in range(500):
            handler.write_line(json.dumps({"i": i}))
        logger.warning("record with password=hunter2")
        handler.flush()
        lines = (tmp_path / "fastapi.log").read_text().splitlines()
        assert [json.loads(x)["i"] for x in lines[:500]] == list(range(500))
        assert "hunter2" not in lines[-1]  # records still go through redaction
    finally:
        logger.removeHandler(handler)
        handler.close()
        handler.close()  # idempotent
    handler.write_line("after close")  # dropped, never raises


def test_background_writer_rotates_without_losing_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptoorchestrator.platform.logs import BackgroundFileHandler

    handler = BackgroundFileHandler(tmp_path / "fastapi.log", "INFO")
    handler._target.maxBytes = 1000  # type: ignore[attr-defined]  # noqa: SLF001
    try:
        for i in range(1000):  # ~11 KB: the 1000-byte file rolls over ten times
            handler.write_line(json.dumps({"i": i}))
        handler.flush()
    finally:
        handler.close()
    assert len(list(tmp_path.glob("fastapi.log*"))) == 6  # the live file and its 5 backups
    backups = sorted(tmp_path.glob("fastapi.log.*"), key=lambda p: -int(p.suffix[1:]))
    kept = [json.loads(x)["i"] for p in backups for x in p.read_text().splitlines()]
    kept += [json.loads(x)["i"] for x in (tmp_path / "fastapi.log").read_text().splitlines()]
    assert kept == list(range(kept[0], 1000))  # consecutive up to the last: nothing dropped
    assert all(p.stat().st_size <= 1000 for p in tmp_path.glob("fastapi.log*"))
    assert "Logging error" not in capsys.readouterr().err


def test_bot_log_rotates_at_its_size_without_losing_lines(tmp_path: Path) -> None:
    logger = bot_logger("rot", tmp_path)
    (handler,) = logger.handlers
    handler.maxBytes = 4_000  # type: ignore[attr-defined]
    for i in range(60):
        logger.info("fill", extra={"event": "fill", "n": i, "clientOrderId": f"co1-{i}-L"})
    _flush(logger)
    files = sorted(tmp_path.glob("bot_rot.log*"))
    assert len(files) > 1  # it rolled over
    assert all(f.stat().st_size <= 4_000 for f in files)
    numbers = sorted(json.loads(line)["n"] for f in files for line in f.read_text().splitlines())
    assert numbers == list(range(60))


def test_redaction_shortcut_still_masks_every_kind_of_secret() -> None:
    register_secret("plain-registered-secret")
    # No ":", "=", "bearer" or "eyJ": only registered secrets can be inside.
    assert redact("value plain-registered-secret here") == "value *** here"
    assert redact("0.00123") == "0.00123"
    assert redact("token: abc") == "token: ***"
    assert redact("BEARER abc.def") == "BEARER ***"
    assert redact("id eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl") == "id ***"
