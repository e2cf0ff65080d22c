"""Email over a real SMTP server (aiosmtpd) on loopback that requires STARTTLS, with a
self-signed certificate made here, and AUTH: delivered only when the certificate is trusted
(the operator's CA file) and the password is right; never in the clear."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message as Mail
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd import controller as aiosmtpd_controller
from aiosmtpd import smtp as aiosmtpd_smtp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cryptoorchestrator.platform.notify.channels import ChannelConfig, ChannelKind
from cryptoorchestrator.platform.notify.config import NotifySettings
from cryptoorchestrator.platform.notify.transports import DeliveryError, Message, Sender

Run = Callable[[Callable[[], Awaitable[None]]], None]
USER, PASSWORD = "relay-user", "relay-Pa55word-not-in-logs"


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1/localhost and its key; return paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp.pem", folder / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Relay:
    """The running server and what it accepted."""

    port: int
    cert: Path
    messages: list[Mail] = field(default_factory=list)
    envelopes: list[tuple[str, list[str], bool, bool]] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    """An aiosmtpd server requiring STARTTLS, then AUTH (PLAIN/LOGIN) with USER/PASSWORD."""
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    box = Relay(port=_free_port(), cert=cert)

    def authenticate(
        _server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any
    ) -> Any:
        login = data.login.decode() if isinstance(data.login, bytes) else str(data.login)
        password = data.password.decode() if isinstance(data.password, bytes) else ""
        ok = (login, password) == (USER, PASSWORD)
        box.logins.append((login, ok))
        return aiosmtpd_smtp.AuthResult(success=ok)

    class Handler:
        async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            box.messages.append(message_from_bytes(envelope.content))
            box.envelopes.append(
                (
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    session.ssl is not None,
                    bool(session.authenticated),
                )
            )
            return "250 OK"

    controller = aiosmtpd_controller.Controller(
        Handler(),
        hostname="127.0.0.1",
        port=box.port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=authenticate,
        ready_timeout=30,
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def _sender(relay: Relay, **overrides: Any) -> Sender:
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": relay.port,
        "smtp_username": USER,
        "smtp_password": PASSWORD,
        "smtp_starttls": True,
        "smtp_ca_file": str(relay.cert),
        "smtp_from": "alerts@example.com",
    }
    values.update(overrides)
    return Sender(NotifySettings(**values))


EMAIL = ChannelConfig(ChannelKind.EMAIL, address="me@example.com")
EVENT = {"id": "fill:1", "type": "order.filled", "severity": "info", "title": "Filled", "text": ""}


def _send(run: Run, sender: Sender) -> DeliveryError | None:
    failures: list[DeliveryError] = []

    async def main() -> None:
        try:
            await sender.send(EMAIL, Message("ntf_1_1", [EVENT]))
        except DeliveryError as exc:
            failures.append(exc)

    run(main)
    return failures[0] if failures else None


def test_starttls_and_auth_deliver_the_message(relay: Relay, run: Run) -> None:
    assert _send(run, _sender(relay)) is None
    assert relay.envelopes == [("alerts@example.com", ["me@example.com"], True, True)]
    (mail,) = relay.messages
    assert mail["Message-ID"] == "<ntf_1_1@cryptoorchestrator>"
    assert mail["Subject"] == "Filled"
    assert relay.logins == [(USER, True)]


def test_an_untrusted_certificate_is_refused_before_any_password_is_sent(
    relay: Relay, run: Run
) -> None:
    error = _send(run, _sender(relay, smtp_ca_file=None))  # the system CAs: self-signed fails
    assert error is not None
    assert error.retryable
    assert relay.messages == []
    assert relay.logins == []  # the password never reached the server


def test_a_wrong_password_or_no_starttls_delivers_nothing(relay: Relay, run: Run) -> None:
    wrong = _send(run, _sender(relay, smtp_password="not-the-password"))
    assert wrong is not None
    assert PASSWORD not in str(wrong)
    assert relay.logins == [(USER, False)]
    # Without STARTTLS the server refuses AUTH and MAIL: the client gets an error, not a send.
    plain = _send(run, _sender(relay, smtp_starttls=False))
    assert plain is not None
    assert relay.messages == []
    assert len(relay.logins) == 1  # no login in the clear
