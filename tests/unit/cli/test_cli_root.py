"""The CLI root: version, help, the db group and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cryptoorchestrator.cli.main import main
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["version"], capsys)
    assert code == 0
    assert out.startswith("cryptoorchestrator ")


def test_db_upgrade_and_current(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRYPTOORCH_DATABASE_URL", settings.database_url)
    code, out, _ = _run(["db", "upgrade"], capsys)
    assert code == 0
    assert f"at revision {db.head_revision()}" in out
    code, out, _ = _run(["db", "current"], capsys)
    assert "up to date" in out


def test_bad_setting_gives_one_line_and_exit_2(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRYPTOORCH_DATABASE_URL", "mysql://nope")
    code, _, err = _run(["db", "current"], capsys)
    assert code == 2
    assert "database_url" in err
    assert "Traceback" not in err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["no-such-command"], capsys)
    assert code == 2
    assert "No such command" in err


def test_installed_script_help_works(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("cryptoorch")
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0
    assert "db" in result.stdout
