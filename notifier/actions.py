"""Pause (and, on recovery, resume) the entity an alert is about, audited in ``entity_actions``.

Never twice: the audit row is inserted *before* the platform is called, in its own
committed transaction, guarded by UNIQUE (fingerprint, action).  Whoever inserts it owns
the call; a redelivered alert or a second notifier finds the row and does nothing.  Until
the call returns the row reads outcome 'failed' with "not confirmed" (the schema has no
'pending'), so a crash mid-call is visible and is never retried behind anyone's back —
retrying a pause after a human resumed the ad would be worse than not pausing.

Meta: ``status`` PAUSED / ACTIVE on the ad, ad set or campaign (facebook-business SDK).
Google Ads: ``status`` PAUSED / ENABLED (update mask ``status``) on the ad
(``adGroupAds/{ad group}~{ad}``, the alert's ``adset_id`` is the ad group), the ad group
(level ``adset``), the campaign or the Performance Max asset group, through the google-ads
SDK (:mod:`adapters.google_ads.status`; Meta's: :mod:`adapters.meta.status`).  Both use the connection's own tokens; errors
are audited as 'failed' with the platform's codes and message, tokens redacted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
from facebook_business.exceptions import FacebookRequestError

from adapters import connections_store as store
from adapters.crypto import Keyring
from adapters.google_ads.poller import GoogleAccount
from adapters.google_ads.status import GoogleStatusError
from adapters.platform import redact
from schemas.alerts import AlertV1

log = logging.getLogger("metricx.notifier")

IN_FLIGHT = "started; the platform call was not confirmed (notifier stopped?) — check the entity"


def fired_fingerprint(fingerprint: str) -> str:
    """The alert a recovery notice recovers: same fingerprint, kind ``fired``."""
    return fingerprint.rsplit("|", 1)[0] + "|fired"


def wanted(alert: AlertV1) -> tuple[str, bool] | None:
    """(action, dry_run) this alert asks for, if any."""
    if alert.kind == "fired" and alert.actions.pause.enabled:
        return "pause", alert.actions.pause.dry_run
    if alert.kind == "recovered" and alert.actions.resume:
        # A resume is only as real as the pause it undoes: a dry-run pause resumes in dry run.
        return "resume", alert.actions.pause.dry_run
    return None


StatusSetter = Callable[[dict[str, Any], str, str, str], None]
# (account, level, entity id, ad group id of an ad, "PAUSED" | "ENABLED")
GoogleSetter = Callable[[GoogleAccount, str, str, str | None, str], object]
# Each platform's word for the state an action leaves the entity in.
META_STATUS = {"pause": "PAUSED", "resume": "ACTIVE"}
GOOGLE_STATUS = {"pause": "PAUSED", "resume": "ENABLED"}


def _meta(conn: psycopg.Connection[Any], keyring: Keyring, alert: AlertV1, meta: StatusSetter, action: str,
          secrets: list[str]) -> str:
    status = META_STATUS[action]
    account = alert.account_id.removeprefix("act_")
    connection = store.get(conn, keyring, str(alert.workspace_id), "meta", account)
    if connection is None:
        raise LookupError(f"no meta connection for account {account} in this workspace")
    secrets.extend(str(v) for v in connection.tokens.values() if v)
    meta(connection.tokens, alert.entity_level, alert.entity_id, status)
    return status


def _claim(conn: psycopg.Connection[Any], alert: AlertV1, action: str, dry_run: bool) -> bool:
    outcome, error = ("would", None) if dry_run else ("failed", IN_FLIGHT)
    with conn.transaction():
        row = conn.execute(
            """INSERT INTO entity_actions (fingerprint, workspace_id, provider, account_id, entity_level, entity_id,
                                           action, dry_run, outcome, error)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (fingerprint, action) DO NOTHING RETURNING id""",
            (alert.fingerprint, alert.workspace_id, alert.provider, alert.account_id, alert.entity_level,
             alert.entity_id, action, dry_run, outcome, error),
        ).fetchone()
    return row is not None


def _finish(conn: psycopg.Connection[Any], alert: AlertV1, action: str, outcome: str, error: str | None) -> None:
    conn.execute("UPDATE entity_actions SET outcome = %s, error = %s WHERE fingerprint = %s AND action = %s",
                 (outcome, error[:1000] if error else None, alert.fingerprint, action))


def _google(conn: psycopg.Connection[Any], keyring: Keyring, alert: AlertV1, google: GoogleSetter | None,
            action: str, secrets: list[str]) -> str:
    status = GOOGLE_STATUS[action]
    customer = alert.account_id.replace("-", "")
    connection = store.get(conn, keyring, str(alert.workspace_id), "google", customer)
    if connection is None:
        raise LookupError(f"no google connection for customer {customer} in this workspace")
    secrets.extend(str(v) for v in connection.tokens.values() if v)
    if google is None:
        raise NotImplementedError("no google status setter configured in this process")
    t = store.GoogleTokens.model_validate(connection.tokens)
    account = GoogleAccount(str(alert.workspace_id), customer, t.developer_token, t.access_token, t.refresh_token,
                            t.client_id, t.client_secret, connection.login_customer_id)
    google(account, alert.entity_level, alert.entity_id, alert.adset_id, status)
    return status


def _error_text(exc: Exception) -> str:
    """What the audit row and the log say about a failed platform call (before redaction)."""
    if isinstance(exc, FacebookRequestError):
        return f"meta error {exc.api_error_code()}: {exc.api_error_message()}"
    if isinstance(exc, GoogleStatusError):
        return str(exc)  # already built from the GoogleAdsFailure
    return f"{type(exc).__name__}: {exc}"


def apply(conn: psycopg.Connection[Any], keyring: Keyring, alert: AlertV1, meta: StatusSetter,
          google: GoogleSetter | None = None) -> str | None:
    """Run the alert's action at most once; returns the recorded outcome, or None when
    there is nothing to do or it was handled before.  ``conn`` in autocommit mode.
    ``meta`` / ``google`` make the platform call (``google`` None: Google actions fail visibly)."""
    want = wanted(alert)
    if want is None:
        return None
    action, dry_run = want
    ctx = {"fingerprint": alert.fingerprint, "workspace_id": str(alert.workspace_id), "provider": alert.provider,
           "account_id": alert.account_id, "entity_id": alert.entity_id, "action": action, "dry_run": dry_run}
    if action == "resume" and not dry_run:
        paused = conn.execute("SELECT outcome FROM entity_actions WHERE fingerprint = %s AND action = 'pause'",
                              (fired_fingerprint(alert.fingerprint),)).fetchone()
        if paused is None or paused[0] != "done":
            # Only undo what metricx did: resuming an ad a person paused would spend their money.
            log.info("nothing to resume: metricx did not pause this entity",
                     extra={**ctx, "pause_outcome": paused[0] if paused else None})
            return None
    if not _claim(conn, alert, action, dry_run):
        return None  # already done, attempted or recorded by an earlier delivery of this alert
    if dry_run:
        log.info("entity action recorded as dry run", extra=ctx)
        return "would"
    secrets: list[str] = []
    try:
        if alert.provider == "google":
            status = _google(conn, keyring, alert, google, action, secrets)
        elif alert.provider == "meta":
            status = _meta(conn, keyring, alert, meta, action, secrets)
        else:
            raise NotImplementedError(f"{action} is not supported for {alert.provider} yet")
    except Exception as exc:
        err = redact(_error_text(exc), secrets)
        _finish(conn, alert, action, "failed", err)
        log.error("entity action failed", extra={**ctx, "error": err})
        return "failed"
    _finish(conn, alert, action, "done", None)
    log.info("entity action done", extra={**ctx, "status": status})
    return "done"
