"""Settings: environment prefix, .env, defaults and the generated secret key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cryptoorchestrator.platform.errors import ConfigError
from cryptoorchestrator.platform.settings import Settings, get_settings


def test_defaults_are_embedded_and_local(settings: Settings, tmp_path: Path) -> None:
    defaults = Settings()
    # relative paths are made absolute against the starting directory, once: settings travel
    # to Ray workers whose working directory is another one
    assert defaults.database_url == f"sqlite:///{tmp_path}/var/cryptoorchestrator.db"
    assert defaults.ray_address is None
    assert defaults.api_port == 8000
    assert defaults.log_dir == tmp_path / "logs"
    assert defaults.data_dir == tmp_path / "var" / "data"
    assert defaults.is_sqlite
    assert Settings(database_url="sqlite:///:memory:").database_url == "sqlite:///:memory:"
    assert Settings(database_url="sqlite:////abs/x.db").database_url == "sqlite:////abs/x.db"


def test_environment_prefix_nested_and_dotenv(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("CRYPTOORCH_API_PORT=9001\nCRYPTOORCH_LOG_LEVEL=debug\n")
    monkeypatch.setenv("CRYPTOORCH_DATABASE_URL", "postgresql://u@h:5432/cryptoorchestrator")
    monkeypatch.setenv("CRYPTOORCH_DB__POOL_SIZE", "3")
    loaded = get_settings()
    assert loaded.api_port == 9001
    assert loaded.log_level == "DEBUG"
    # plain postgresql:// URLs are pinned to psycopg 3
    assert loaded.database_url == "postgresql+psycopg://u@h:5432/cryptoorchestrator"
    assert loaded.db.pool_size == 3


def test_bad_setting_is_one_clear_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRYPTOORCH_API_PORT", "99999")
    with pytest.raises(ConfigError, match="api_port"):
        get_settings()


def test_secret_key_generated_once_owner_only(settings: Settings) -> None:
    key = settings.resolved_secret_key()
    path = settings.var_dir / "secret.key"
    assert len(key) >= 48
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert settings.resolved_secret_key() == key
    assert key not in repr(settings)


def test_explicit_secret_key_wins_and_is_hidden(tmp_path: Path) -> None:
    s = Settings(secret_key="s3cr3t-value-from-env", var_dir=tmp_path)
    assert s.resolved_secret_key() == "s3cr3t-value-from-env"
    assert "s3cr3t-value-from-env" not in repr(s)
    assert not (tmp_path / "secret.key").exists()
