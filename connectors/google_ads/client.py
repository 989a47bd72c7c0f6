"""A ``GoogleAdsClient`` for one connection: its OAuth credentials, renewed at a token
endpoint we can configure, and the API endpoint.

Why not ``GoogleAdsClient.load_from_dict``: with ``client_id`` / ``client_secret`` /
``refresh_token`` it builds ``google.oauth2.credentials.Credentials`` with the SDK's fixed
token URI (``oauth2.get_installed_app_credentials`` is not given one) and refreshes at
once, inside the constructor.  We build the same ``Credentials`` ourselves with the
configured token URI (``METRICX_GOOGLE_OAUTH_TOKEN_URL``, so a fake or a proxy can serve
it) and refresh them explicitly before a call, where a refusal can be told apart:
``invalid_grant`` (a revoked or expired refresh token) ends in ``needs_reauth`` with a
message that says what to do, a token endpoint that is away is an error retried later.

A bare ``access_token`` (no refresh token) is still accepted; Google expires it about an
hour after it was issued and it cannot be renewed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import requests
from google.ads.googleads.client import GoogleAdsClient
from google.auth.exceptions import RefreshError, TransportError
from google.auth.transport.requests import Request
from google.oauth2.credentials import Credentials

from connectors.connections.errors import NeedsReauth, SyncFailure, redact

API_VERSION = "v26"
TOKEN_URL = "https://oauth2.googleapis.com/token"
BARE_TOKEN_NOTE = ("google access_token only: Google expires it about an hour after it was issued and it cannot be "
                   "renewed; reconnect with client_id, client_secret and refresh_token")
# OAuth errors that no retry can fix: the grant or the client is gone.
_REAUTH_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})


@dataclass(frozen=True)
class GoogleApi:
    """Where the Google Ads API (``host:port``, None: Google's) and the OAuth token
    endpoint are."""

    endpoint: str | None = None
    token_url: str = TOKEN_URL


@dataclass(frozen=True)
class GoogleAccount:
    workspace_id: str
    customer_id: str  # digits only
    developer_token: str = field(repr=False)
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    login_customer_id: str | None = None

    def secrets(self) -> list[str]:
        return [s for s in (self.developer_token, self.access_token, self.refresh_token, self.client_secret) if s]

    @property
    def renewable(self) -> bool:
        return bool(self.refresh_token and self.client_id and self.client_secret)


def credentials_for(account: GoogleAccount, api: GoogleApi) -> Credentials:
    """The connection's OAuth credentials: the refresh grant when it has one (the stored
    access token, if any, is not used: its age is unknown), else the bare access token."""
    if account.renewable:
        return Credentials(  # type: ignore[no-untyped-call]
            token=None, refresh_token=account.refresh_token, client_id=account.client_id,
            client_secret=account.client_secret, token_uri=api.token_url)
    return Credentials(token=account.access_token)  # type: ignore[no-untyped-call]


def _oauth_error(err: RefreshError) -> str:
    """The OAuth ``error`` code of a refusal (``invalid_grant``...), or ""."""
    data = err.args[1] if len(err.args) > 1 else None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])[:64]
    head = str(err.args[0]) if err.args else ""
    return head.split(":", 1)[0][:64] if ":" in head else ""


def refresh(creds: Credentials, account: GoogleAccount, api: GoogleApi, *, force: bool = False) -> bool:
    """Renew ``creds`` at the token endpoint when they are not valid (or ``force``).
    Returns whether a refresh happened.  Raises :class:`NeedsReauth` when the grant or
    client is refused, :class:`SyncFailure` when the endpoint cannot answer."""
    if not account.renewable or (creds.valid and not force):
        return False
    session = requests.Session()
    try:
        # google-auth's transport gives every token request a 120 s timeout.
        creds.refresh(Request(session=session))  # type: ignore[no-untyped-call]
    except RefreshError as err:
        code = _oauth_error(err)
        text = redact(str(err.args[0]) if err.args else "", account.secrets())[:300]
        if code in _REAUTH_ERRORS:
            raise NeedsReauth(f"google OAuth refresh refused ({text}): reconnect the account with a new "
                              "refresh token") from None
        raise SyncFailure(f"google OAuth refresh failed: {text}") from None
    except TransportError as err:
        raise SyncFailure(f"google OAuth token endpoint unreachable: {type(err.__cause__ or err).__name__}") from None
    finally:
        session.close()
    return True


def build_client(account: GoogleAccount, api: GoogleApi | str | None = None,
                 creds: Credentials | None = None) -> GoogleAdsClient:
    """A ``GoogleAdsClient`` with the connection's credentials (``creds``: already built,
    e.g. cached across syncs), developer token and ``login_customer_id``."""
    api = api if isinstance(api, GoogleApi) else GoogleApi(endpoint=api)
    return GoogleAdsClient(
        credentials=creds if creds is not None else credentials_for(account, api),
        developer_token=account.developer_token,
        endpoint=api.endpoint,
        login_customer_id=account.login_customer_id,
        version=API_VERSION,
        use_proto_plus=True,
    )
