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

import functools
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

import grpc
import requests
from google.ads.googleads import client as sdk_client
from google.ads.googleads import util as sdk_util  # type: ignore[attr-defined]
from google.ads.googleads.client import GoogleAdsClient
from google.ads.googleads.interceptors import ExceptionInterceptor, LoggingInterceptor, MetadataInterceptor
from google.auth.exceptions import RefreshError, TransportError
from google.auth.transport.requests import Request
from google.oauth2.credentials import Credentials

from adapters.platform import NeedsReauth, SyncFailure, redact
from ground.settings import GOOGLE_TOKEN_URL, MAX_CA_FILE_BYTES

API_VERSION = "v26"
TOKEN_URL = GOOGLE_TOKEN_URL
BARE_TOKEN_NOTE = ("google access_token only: Google expires it about an hour after it was issued and it cannot be "
                   "renewed; reconnect with client_id, client_secret and refresh_token")
# OAuth errors that no retry can fix: the grant or the client is gone.
_REAUTH_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})




@dataclass(frozen=True)
class GoogleApi:
    """Where the Google Ads API (``host:port``, None: Google's) and the OAuth token
    endpoint are, and ``ca_file``: a PEM bundle trusted for both instead of the system
    roots (a proxy or a fake behind a private CA; ``METRICX_GOOGLE_ADS_CA_FILE``)."""

    endpoint: str | None = None
    token_url: str = TOKEN_URL
    ca_file: str | None = None


@functools.lru_cache(maxsize=8)
def _roots(path: str) -> bytes:
    """The CA bundle's bytes (read once per process; the settings checked it at start)."""
    with open(path, "rb") as f:
        data = f.read(MAX_CA_FILE_BYTES + 1)
    if len(data) > MAX_CA_FILE_BYTES or b"-----BEGIN CERTIFICATE-----" not in data:
        raise ValueError(f"{path}: not a PEM certificate bundle of at most {MAX_CA_FILE_BYTES} bytes")
    return data


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
        creds.refresh(_Request(session, api.ca_file))  # type: ignore[no-untyped-call]
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


class _Request(Request):
    """google-auth's requests transport, verifying TLS against ``ca_file`` when given.
    Per request, not ``session.verify``: requests lets ``REQUESTS_CA_BUNDLE`` override a
    session's setting, never a request's."""

    def __init__(self, session: requests.Session, ca_file: str | None) -> None:
        super().__init__(session=session)
        self._ca_file = ca_file

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._ca_file:
            kwargs.setdefault("verify", self._ca_file)
        return super().__call__(*args, **kwargs)  # type: ignore[no-untyped-call]


def build_client(account: GoogleAccount, api: GoogleApi | str | None = None,
                 creds: Credentials | None = None) -> GoogleAdsClient:
    """A ``GoogleAdsClient`` with the connection's credentials (``creds``: already built,
    e.g. cached across syncs), developer token and ``login_customer_id``."""
    api = api if isinstance(api, GoogleApi) else GoogleApi(endpoint=api)
    kwargs: dict[str, Any] = {
        "credentials": creds if creds is not None else credentials_for(account, api),
        "developer_token": account.developer_token,
        "endpoint": api.endpoint,
        "login_customer_id": account.login_customer_id,
        "version": API_VERSION,
        "use_proto_plus": True,
    }
    if api.ca_file:
        return _TrustingClient(root_certificates=_roots(api.ca_file), **kwargs)
    return GoogleAdsClient(**kwargs)


class _TrustingClient(GoogleAdsClient):  # type: ignore[misc]
    """The SDK's client whose channels trust ``root_certificates`` instead of the system
    roots, per client.

    ``GoogleAdsClient.get_service`` takes no channel credentials, and gRPC's only other
    way is ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``, read once per process for every channel.
    So the synchronous path of ``get_service`` (google-ads 34) is mirrored here with
    ``ssl_credentials`` added: the same channel options, interceptors (metadata, logging,
    exceptions), transport and client info; the async and REST services are not used.
    ``tests/adapters/google_ads/test_custom_ca.py`` runs it against a TLS fake."""

    def __init__(self, *args: Any, root_certificates: bytes, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ssl = grpc.ssl_channel_credentials(root_certificates=root_certificates)

    def get_service(self, name: str, version: str = API_VERSION, interceptors: list[Any] | None = None,
                    is_async: bool = False) -> Any:
        if is_async or name == "YouTubeVideoUploadService":
            raise NotImplementedError(f"{name} (async or REST) with a custom CA")
        version = self.version or version
        module = import_module(f"google.ads.googleads.{version}.services.services."
                               f"{sdk_util.convert_upper_case_to_snake_case(name)}")
        client_class: Any = getattr(module, f"{name}Client")
        transport_class: Any = client_class.get_transport_class(None)
        endpoint = self.endpoint or client_class.DEFAULT_ENDPOINT
        channel = transport_class.create_channel(host=endpoint, credentials=self.credentials,
                                                 options=sdk_client._GRPC_CHANNEL_OPTIONS, ssl_credentials=self._ssl)
        channel = grpc.intercept_channel(
            channel, *(interceptors or []),
            MetadataInterceptor(self.developer_token, self.login_customer_id, self.linked_customer_id,
                                ads_assistant=self._ads_assistant),
            LoggingInterceptor(sdk_client._logger, version, endpoint),
            ExceptionInterceptor(version, use_proto_plus=self.use_proto_plus),
        )
        return client_class(transport=transport_class(channel=channel, client_info=sdk_client._CLIENT_INFO))
