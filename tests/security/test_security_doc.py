"""``docs/security.md`` works as written: its shell blocks run, its nginx set-up is the one the
API's proxy rules expect."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cryptoorchestrator.api.config import ApiOptions
from cryptoorchestrator.api.proxies import TrustedProxies

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def _blocks(kind: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(DOC.read_text()) if lang == kind]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOORCH_")}
    env.update(
        CRYPTOORCH_DATABASE_URL=f"sqlite:///{tmp_path / 'var' / 'co.db'}",
        CRYPTOORCH_VAR_DIR=str(tmp_path / "var"),
        CRYPTOORCH_LOG_DIR=str(tmp_path / "logs"),
        CRYPTOORCH_DATA_DIR=str(tmp_path / "var" / "data"),
        RAY_AUTH_MODE="disabled",
    )
    # The scripts of this interpreter's environment first: `cryptoorch` is the installed one.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_shell_blocks_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert shutil.which("cryptoorch", path=_env(tmp_path)["PATH"])
    blocks = _blocks("bash")
    assert len(blocks) == 3
    users, proxies, rotate = blocks
    done = _run("cryptoorch db upgrade\n" + users, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ops@example.com" in done.stdout
    # `serve` would start the platform: check the setting it reads instead.
    assert "cryptoorch serve" in proxies
    assignment = proxies.split("cryptoorch serve")[0].strip()
    name, _, value = assignment.partition("=")
    monkeypatch.setenv(name, value.strip("'"))
    assert ApiOptions().trusted_proxies == ["127.0.0.1"]
    key_file = tmp_path / "var" / "secret.key"
    key = key_file.read_text() if key_file.exists() else None
    done = _run(rotate, tmp_path)
    assert done.returncode == 0, done.stderr
    assert key_file.read_text() not in (key, "")
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "must log in again" in done.stdout


def test_nginx_block_sets_what_the_api_trusts() -> None:
    (nginx,) = _blocks("nginx")
    headers = dict(re.findall(r"proxy_set_header\s+(\S+)\s+(.+?);", nginx))
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    assert headers["Upgrade"] == "$http_upgrade"  # WebSockets (/ws/bots, /ws/market-data)
    assert "proxy_pass http://127.0.0.1:8000;" in nginx
    # What nginx sends for a client at 203.0.113.9 that forged an X-Forwarded-For of its own.
    scope = {
        "type": "http",
        "scheme": "http",
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"x-forwarded-for", b"10.9.9.9, 203.0.113.9"),
            (b"x-forwarded-proto", b"https"),
        ],
    }
    trusted = TrustedProxies(["127.0.0.1"])
    assert trusted.client_ip(scope) == "203.0.113.9"
    assert trusted.is_https(scope)
    assert TrustedProxies().client_ip(scope) == "127.0.0.1"
