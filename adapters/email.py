"""Email over SMTP (stdlib ``smtplib``): STARTTLS and auth as configured, one message per
alert, the connection reused across a batch.

Replies are classified the way SMTP defines them: 4xx is "try again later" (greylisting,
a full queue), 5xx is final.  The Message-ID is derived from the fingerprint, so if a
message ever does go out twice (SMTP's own ambiguity: the connection drops after the
relay accepted DATA but before we read its 250), mail clients can fold the copies.
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Literal

from ground.settings import NotifierSettings
from schemas.alerts import EmailContent

log = logging.getLogger("metricx.notifier")

IDLE_RECONNECT_S = 30.0  # relays drop idle sessions; do not reuse one older than this
FINGERPRINT_HEADER = "X-Metricx-Alert"

Outcome = Literal["sent", "retry", "dead", "disable"]


@dataclass(frozen=True, slots=True)
class EmailResult:
    outcome: Outcome  # "disable": every recipient refused permanently (the channel is wrong)
    error: str | None = None


def message_id(fingerprint: str, sender: str) -> str:
    domain = parseaddr(sender)[1].rpartition("@")[2] or "metricx.localhost"
    return f"<alert-{hashlib.sha256(fingerprint.encode()).hexdigest()[:40]}@{domain}>"


def parse_recipients(secret: str) -> list[str]:
    """The channel secret: comma- (or newline-) separated addresses."""
    out = [parseaddr(p.strip())[1] for p in secret.replace("\n", ",").split(",") if p.strip()]
    return [a for a in out if "@" in a]


def build_message(sender: str, recipients: list[str], fingerprint: str, content: EmailContent) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = content.subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id(fingerprint, sender)
    msg[FINGERPRINT_HEADER] = fingerprint
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to alerts
    msg.set_content(content.text)
    return msg


def _reply(code: int, text: bytes | str) -> str:
    t = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return f"{code} {t}".strip()[:500]


class EmailSender:
    def __init__(self, settings: NotifierSettings) -> None:
        self.s = settings
        self._smtp: smtplib.SMTP | None = None
        self._used_at = 0.0

    def _connect(self) -> smtplib.SMTP:
        s = self.s
        smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s)
        try:
            smtp.ehlo()
            if s.smtp_starttls:
                ctx = ssl.create_default_context(cafile=str(s.smtp_ca_file) if s.smtp_ca_file else None)
                smtp.starttls(context=ctx)
                smtp.ehlo()
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password.get_secret_value() if s.smtp_password else "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None

    def send(self, recipients: list[str], fingerprint: str, content: EmailContent) -> EmailResult:
        if not recipients:
            return EmailResult("disable", "email channel has no valid recipient address")
        msg = build_message(self.s.smtp_from, recipients, fingerprint, content)
        try:
            if self._smtp is None or time.monotonic() - self._used_at > IDLE_RECONNECT_S:
                self.close()
                self._smtp = self._connect()
            refused = self._smtp.send_message(msg, from_addr=parseaddr(self.s.smtp_from)[1], to_addrs=recipients)
            self._used_at = time.monotonic()
        except smtplib.SMTPRecipientsRefused as exc:
            self.close()
            codes = {a: c for a, (c, _) in exc.recipients.items()}
            detail = "; ".join(f"{a}: {_reply(c, t)}" for a, (c, t) in exc.recipients.items())
            if all(500 <= c < 600 for c in codes.values()):
                return EmailResult("disable", f"every recipient refused: {detail}"[:1000])
            return EmailResult("retry", f"recipients refused for now: {detail}"[:1000])
        except smtplib.SMTPAuthenticationError as exc:
            # Our credentials, not this alert: keep it queued while an operator fixes them.
            self.close()
            log.error("smtp authentication failed; check METRICX_SMTP_USERNAME/PASSWORD",
                      extra={"code": exc.smtp_code})
            return EmailResult("retry", f"smtp authentication failed: {_reply(exc.smtp_code, exc.smtp_error)}")
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, ...
            self.close()
            reply = _reply(exc.smtp_code, exc.smtp_error)
            if 500 <= exc.smtp_code < 600:
                return EmailResult("dead", f"smtp refused the message: {reply}")
            return EmailResult("retry", f"smtp deferred the message: {reply}")
        except (smtplib.SMTPException, OSError) as exc:  # disconnects, timeouts, refused connections, TLS
            self.close()
            return EmailResult("retry", f"smtp transport error: {type(exc).__name__}: {str(exc)[:200]}")
        if refused:
            log.warning("some recipients refused an alert email",
                        extra={"fingerprint": fingerprint, "refused": {a: c for a, (c, _) in refused.items()}})
        return EmailResult("sent")
