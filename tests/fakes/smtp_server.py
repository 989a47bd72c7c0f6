"""A real SMTP server (aiosmtpd) that captures mail, for the email client and the e2e test.

Replies to DATA (or RCPT) can be scripted: ``fake.script_data("451 4.3.0 try again later")``
answers the next DATA with that reply; ``fake.reject_rcpt("x@example.com", "550 5.1.1 no
such user")`` refuses that recipient every time.  STARTTLS and AUTH use a self-signed
certificate generated at test time (:func:`self_signed`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: Message
    at: float
    tls: bool
    user: str | None

    @property
    def fingerprint(self) -> str:
        return "".join(str(self.message["X-Metricx-Alert"]).split())


class _Handler:
    def __init__(self, fake: FakeSmtp) -> None:
        self.fake = fake

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        with self.fake._lock:
            refused = self.fake._rcpt_refusals.get(address)
        if refused:
            return refused
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.fake._lock:
            self.fake.data_attempts += 1
            if self.fake._data_replies:
                return self.fake._data_replies.pop(0)
            msg = message_from_bytes(envelope.content, policy=policy.default)
            auth = session.auth_data
            user = auth.login.decode() if isinstance(auth, LoginPassword) else None
            self.fake.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), msg, time.time(),
                                        bool(session.ssl), user))
        return "250 2.0.0 Message accepted"


class FakeSmtp:
    def __init__(self, *, tls: tuple[Path, Path] | None = None, users: dict[str, str] | None = None) -> None:
        self.mails: list[Mail] = []
        self.data_attempts = 0
        self._data_replies: list[str] = []
        self._rcpt_refusals: dict[str, str] = {}
        self._lock = threading.Lock()
        self._tls = tls
        self._users = users
        self.port = 0

    def script_data(self, *replies: str) -> None:
        with self._lock:
            self._data_replies.extend(replies)

    def reject_rcpt(self, address: str, reply: str) -> None:
        with self._lock:
            self._rcpt_refusals[address] = reply

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = (isinstance(data, LoginPassword) and self._users is not None
              and self._users.get(data.login.decode()) == data.password.decode())
        return AuthResult(success=ok, handled=False, auth_data=data)

    @contextmanager
    def running(self) -> Iterator[FakeSmtp]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        kwargs: dict[str, Any] = {}
        if self._tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(self._tls[0]), str(self._tls[1]))
            kwargs.update(tls_context=ctx, require_starttls=True)
        if self._users is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=self._tls is not None)
        controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port, **kwargs)
        controller.start()
        try:
            yield self
        finally:
            controller.stop()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """(cert.pem, key.pem) for 127.0.0.1 / localhost; the cert doubles as the client's CA file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "metricx test smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
