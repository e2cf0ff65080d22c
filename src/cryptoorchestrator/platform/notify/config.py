"""The operator's notification settings (``Settings.notify``, ``CRYPTOORCH_NOTIFY__*``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class NotifySettings(BaseModel):
    """Where notifications may go and how the dispatcher retries them.

    Attributes
    ----------
    allowed_hosts
        ``host`` or ``host:port`` entries the operator trusts: channel URLs may use ``http``
        and private or loopback addresses there (a local relay, tests); other hosts need
        ``https`` and public addresses only.
    telegram_api_base
        Telegram Bot API root (a local fake in tests; its host must then be allowed).
    smtp_ca_file
        PEM file of the CA (or the self-signed certificate) the SMTP server's certificate is
        checked against; the system's CAs when unset.  The certificate is always checked.
    secret_grace_s
        After a webhook's signing secret is rotated, requests are signed with the old secret
        too for this long (Standard Webhooks receivers accept any listed signature).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    dispatcher: bool = Field(True, description="run the delivery task in this API process")
    allowed_hosts: list[str] = Field(default_factory=list)
    telegram_api_base: str = "https://api.telegram.org"
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_ssl: bool = False
    smtp_from: str = "cryptoorchestrator@localhost"
    smtp_ca_file: str | None = None
    secret_grace_s: float = Field(86_400.0, ge=0, le=30 * 86_400)
    max_attempts: int = Field(8, ge=1, le=100, description="attempts before the dead letter")
    backoff_base_s: float = Field(5.0, gt=0)
    backoff_max_s: float = Field(3600.0, gt=0)
    lease_s: float = Field(120.0, gt=0, description="a claim older than this is re-claimed")
    poll_s: float = Field(2.0, gt=0)
    max_batch: int = Field(50, ge=1, le=500, description="events coalesced into one message")
    send_timeout_s: float = Field(10.0, gt=0)
    concurrency: int = Field(8, ge=1, le=64, description="channels sent to at once")
