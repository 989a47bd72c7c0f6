"""A local gRPC server implementing ``GoogleAdsService.SearchStream`` and the status
``Mutate*`` RPCs (ads, ad groups, campaigns, asset groups) from the google-ads library's
own protos, served over TLS (a throwaway self-signed certificate for localhost)
so the real client reaches it through its ordinary secure channel.

Set ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` to :attr:`FakeGoogleAds.ca_path` before the first
gRPC TLS channel of the process (see :func:`trust_fake_roots`).

It understands the three GAQL shapes the poller sends (``FROM customer``,
``FROM ad_group_ad``, ``FROM asset_group`` with ``segments.date BETWEEN``), checks the
bearer token, developer token and ``login-customer-id`` metadata, and can be scripted to
fail with a ``QuotaError`` carrying ``retry_delay``, an authentication error or (mutates)
a ``MutateError`` whose message the test chooses.  Mutations are recorded in
:attr:`FakeGoogleAds.mutations` and change the entity's status in ``FakeCustomer.statuses``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.ads.googleads.v26.errors.types import errors as err_types
from google.ads.googleads.v26.errors.types.authentication_error import AuthenticationErrorEnum
from google.ads.googleads.v26.errors.types.mutate_error import MutateErrorEnum
from google.ads.googleads.v26.errors.types.quota_error import QuotaErrorEnum
from google.ads.googleads.v26.errors.types.request_error import RequestErrorEnum
from google.ads.googleads.v26.services.types import (
    ad_group_ad_service,
    ad_group_service,
    asset_group_service,
    campaign_service,
)
from google.ads.googleads.v26.services.types import google_ads_service as svc
from google.protobuf import duration_pb2

SERVICE = "google.ads.googleads.v26.services.GoogleAdsService"
_SERVICES = "google.ads.googleads.v26.services"
# service -> (method, request type, response type, result type, resource-name collection)
MUTATES: dict[str, tuple[str, Any, Any, Any, str]] = {
    "AdGroupAdService": ("MutateAdGroupAds", ad_group_ad_service.MutateAdGroupAdsRequest,
                         ad_group_ad_service.MutateAdGroupAdsResponse, ad_group_ad_service.MutateAdGroupAdResult,
                         "adGroupAds"),
    "AdGroupService": ("MutateAdGroups", ad_group_service.MutateAdGroupsRequest,
                       ad_group_service.MutateAdGroupsResponse, ad_group_service.MutateAdGroupResult, "adGroups"),
    "CampaignService": ("MutateCampaigns", campaign_service.MutateCampaignsRequest,
                        campaign_service.MutateCampaignsResponse, campaign_service.MutateCampaignResult, "campaigns"),
    "AssetGroupService": ("MutateAssetGroups", asset_group_service.MutateAssetGroupsRequest,
                          asset_group_service.MutateAssetGroupsResponse, asset_group_service.MutateAssetGroupResult,
                          "assetGroups"),
}
FAILURE_KEY = "google.ads.googleads.v26.errors.googleadsfailure-bin"
_CA_DIR = Path(tempfile.gettempdir()) / f"metricx-fake-gads-{os.getpid()}"


@dataclass
class AdDay:
    campaign_id: int
    group_id: int  # ad group (ads) or asset group (Performance Max)
    entity_id: int  # ad id; equals group_id for asset groups
    day: date
    cost_micros: int
    impressions: int
    clicks: int
    conversions: float
    conversions_value: float
    pmax: bool = False


@dataclass
class FakeCustomer:
    customer_id: str
    token: str
    time_zone: str = "Europe/Berlin"
    currency_code: str = "EUR"
    login_customer_id: str | None = None  # required manager id, if any
    days: dict[tuple[int, date], AdDay] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    statuses: dict[int, str] = field(default_factory=dict)

    def put(self, row: AdDay) -> None:
        self.days[(row.entity_id, row.day)] = row


@dataclass
class Scripted:
    kind: str  # "quota" | "auth" | "unavailable" | "not_found" (a MutateError) | "pass" (answer normally)
    retry_delay_s: int = 0
    message: str | None = None  # the GoogleAdsError message ("not_found")


@dataclass
class Seen:
    customer_id: str
    query: str
    metadata: dict[str, str]


@dataclass
class Mutation:
    """One operation of a ``Mutate*`` request, as received."""

    service: str  # e.g. "AdGroupAdService"
    customer_id: str
    operation: str  # "update" | "create" | "remove"
    resource_name: str
    status: str  # enum name, e.g. "PAUSED"
    update_mask: list[str]
    metadata: dict[str, str]


def _tls_material() -> tuple[bytes, bytes, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _CA_DIR.mkdir(parents=True, exist_ok=True)
    ca = _CA_DIR / "ca.pem"
    ca.write_bytes(cert_pem)
    return cert_pem, key_pem, ca


_MATERIAL: tuple[bytes, bytes, Path] | None = None
_MAT_LOCK = threading.Lock()


def trust_fake_roots() -> Path:
    """Create the process's fake certificate once and make gRPC trust it.  Must run before
    the first TLS channel (gRPC reads the roots once per process)."""
    global _MATERIAL
    with _MAT_LOCK:
        if _MATERIAL is None:
            _MATERIAL = _tls_material()
            os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(_MATERIAL[2])
        return _MATERIAL[2]


_RANGE = re.compile(r"segments\.date BETWEEN '(\d{4}-\d{2}-\d{2})' AND '(\d{4}-\d{2}-\d{2})'")
_FROM = re.compile(r"\bFROM\s+(\w+)")


class FakeGoogleAds:
    def __init__(self, developer_token: str = "devtok-fake") -> None:
        trust_fake_roots()
        self.developer_token = developer_token
        self.customers: dict[str, FakeCustomer] = {}
        self.seen: list[Seen] = []
        self.mutations: list[Mutation] = []
        self._script: list[Scripted] = []
        self._lock = threading.Lock()
        self.port = 0
        self.batch_size = 3  # rows per streamed response, so several messages are streamed

    def add(self, customer: FakeCustomer) -> FakeCustomer:
        self.customers[customer.customer_id] = customer
        return customer

    def fail_next(self, *items: Scripted) -> None:
        with self._lock:
            self._script.extend(items)

    @property
    def endpoint(self) -> str:
        return f"localhost:{self.port}"

    def _abort(self, context: grpc.ServicerContext, code: grpc.StatusCode, failure: Any, text: str) -> None:
        context.set_trailing_metadata(((FAILURE_KEY, err_types.GoogleAdsFailure.serialize(failure)), ("request-id", "fake-req")))
        context.abort(code, text)

    def _quota(self, context: grpc.ServicerContext, delay: int) -> None:
        details = err_types.ErrorDetails(quota_error_details=err_types.QuotaErrorDetails(
            rate_scope=err_types.QuotaErrorDetails.QuotaRateScope.ACCOUNT, rate_name="Requests per account",
            retry_delay=duration_pb2.Duration(seconds=delay)))
        failure = err_types.GoogleAdsFailure(errors=[err_types.GoogleAdsError(
            error_code=err_types.ErrorCode(quota_error=QuotaErrorEnum.QuotaError.RESOURCE_TEMPORARILY_EXHAUSTED),
            message=f"Too many requests. Retry in {delay} seconds.", details=details)])
        self._abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, failure, "quota")

    def _auth(self, context: grpc.ServicerContext) -> None:
        failure = err_types.GoogleAdsFailure(errors=[err_types.GoogleAdsError(
            error_code=err_types.ErrorCode(authentication_error=AuthenticationErrorEnum.AuthenticationError.OAUTH_TOKEN_EXPIRED),
            message="Authentication of the request failed.")])
        self._abort(context, grpc.StatusCode.UNAUTHENTICATED, failure, "Request is missing required authentication credential.")

    def _customer(self, customer_id: str, md: dict[str, str], context: grpc.ServicerContext) -> FakeCustomer | None:
        """The customer, if the credentials, developer token and login-customer-id fit
        (else the call is aborted as Google would)."""
        cust = self.customers.get(customer_id)
        if cust is None or md.get("authorization") != f"Bearer {cust.token}" or md.get("developer-token") != self.developer_token:
            self._auth(context)
            return None
        if cust.login_customer_id is not None and md.get("login-customer-id") != cust.login_customer_id:
            failure = err_types.GoogleAdsFailure(errors=[err_types.GoogleAdsError(
                error_code=err_types.ErrorCode(authorization_error=2), message="User doesn't have permission to access customer.")])
            self._abort(context, grpc.StatusCode.PERMISSION_DENIED, failure, "permission denied")
            return None
        return cust

    def _mutate_error(self, context: grpc.ServicerContext, code: err_types.ErrorCode, message: str) -> None:
        failure = err_types.GoogleAdsFailure(errors=[err_types.GoogleAdsError(error_code=code, message=message)])
        self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, failure, "Request contains an invalid argument.")

    def _mutate(self, service: str, request: Any, context: grpc.ServicerContext) -> Any:
        _, _, response_type, result_type, collection = MUTATES[service]
        md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        ops = []
        for op in request.operations:
            which = type(op).pb(op).WhichOneof("operation") or ""
            target = getattr(op, which) if which in ("update", "create") else None
            ops.append(Mutation(service, request.customer_id, which,
                                op.remove if which == "remove" else target.resource_name if target else "",
                                target.status.name if target is not None else "", list(op.update_mask.paths), md))
        with self._lock:
            self.mutations.extend(ops)
            scripted = self._script.pop(0) if self._script else None
        cust = self._customer(request.customer_id, md, context)
        if cust is None:
            return None
        if scripted is not None:
            if scripted.kind == "quota":
                self._quota(context, scripted.retry_delay_s)
            elif scripted.kind == "auth":
                self._auth(context)
            elif scripted.kind == "not_found":
                self._mutate_error(context, err_types.ErrorCode(mutate_error=MutateErrorEnum.MutateError.RESOURCE_NOT_FOUND),
                                   scripted.message or "Resource was not found.")
            else:
                context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
            return None
        prefix = f"customers/{request.customer_id}/{collection}/"
        for m in ops:
            if m.operation != "update" or m.update_mask != ["status"]:
                context.abort(grpc.StatusCode.UNIMPLEMENTED, "the fake only updates status")
                return None
            if not m.resource_name.startswith(prefix):
                self._mutate_error(context, err_types.ErrorCode(
                    request_error=RequestErrorEnum.RequestError.RESOURCE_NAME_MALFORMED),
                    f"Resource name {m.resource_name!r} is malformed.")
                return None
        with self._lock:
            for m in ops:
                leaf = m.resource_name.rsplit("/", 1)[1].rsplit("~", 1)[-1]
                cust.statuses[int(leaf)] = m.status
        return response_type(results=[result_type(resource_name=m.resource_name) for m in ops])

    def search_stream(self, request: svc.SearchGoogleAdsStreamRequest, context: grpc.ServicerContext) -> Iterator[svc.SearchGoogleAdsStreamResponse]:
        md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        with self._lock:
            self.seen.append(Seen(request.customer_id, request.query, md))
            scripted = self._script.pop(0) if self._script else None
        cust = self._customer(request.customer_id, md, context)
        if cust is None:
            return
        if scripted is not None and scripted.kind != "pass":
            if scripted.kind == "quota":
                self._quota(context, scripted.retry_delay_s)
            elif scripted.kind == "auth":
                self._auth(context)
            else:
                context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
            return
        frm = _FROM.search(request.query)
        resource = frm.group(1) if frm else ""
        if resource == "customer":
            row = svc.GoogleAdsRow()
            row.customer.id = int(cust.customer_id)
            row.customer.time_zone = cust.time_zone
            row.customer.currency_code = cust.currency_code
            yield svc.SearchGoogleAdsStreamResponse(results=[row], request_id="fake-req")
            return
        m = _RANGE.search(request.query)
        if m is None and resource in ("ad_group_ad", "asset_group"):
            yield from self._entities(cust, resource)
            return
        if resource not in ("ad_group_ad", "asset_group") or m is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"fake cannot answer {request.query!r}")
            return
        since, until = date.fromisoformat(m.group(1)), date.fromisoformat(m.group(2))
        want_pmax = resource == "asset_group"
        rows = []
        for (_, d), a in sorted(cust.days.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            if not (since <= d <= until) or a.pmax != want_pmax:
                continue
            row = svc.GoogleAdsRow()
            row.campaign.id = a.campaign_id
            if want_pmax:
                row.asset_group.id = a.group_id
            else:
                row.ad_group.id = a.group_id
                row.ad_group_ad.ad.id = a.entity_id
            row.segments.date = d.isoformat()
            row.metrics.cost_micros = a.cost_micros
            row.metrics.impressions = a.impressions
            row.metrics.clicks = a.clicks
            row.metrics.conversions = a.conversions
            row.metrics.conversions_value = a.conversions_value
            rows.append(row)
        for i in range(0, max(len(rows), 1), self.batch_size):
            yield svc.SearchGoogleAdsStreamResponse(results=rows[i : i + self.batch_size], request_id="fake-req")

    def _entities(self, cust: FakeCustomer, resource: str) -> Iterator[svc.SearchGoogleAdsStreamResponse]:
        """Entity rows (no segments): one per ad or asset group, with the names set in
        ``cust.names`` (default ``"<kind> <id>"``) and ``cust.statuses`` (default ENABLED)."""
        seen: set[int] = set()
        rows = []
        for a in cust.days.values():
            if a.entity_id in seen or a.pmax != (resource == "asset_group"):
                continue
            seen.add(a.entity_id)
            row = svc.GoogleAdsRow()
            row.campaign.id = a.campaign_id
            row.campaign.name = cust.names.get(a.campaign_id, f"Campaign {a.campaign_id}")
            row.campaign.status = cust.statuses.get(a.campaign_id, "ENABLED")  # type: ignore[assignment]  # proto-plus takes enum names
            if a.pmax:
                row.asset_group.id = a.group_id
                row.asset_group.name = cust.names.get(a.group_id, f"Asset group {a.group_id}")
                row.asset_group.status = cust.statuses.get(a.group_id, "ENABLED")  # type: ignore[assignment]
            else:
                row.ad_group.id = a.group_id
                row.ad_group.name = cust.names.get(a.group_id, f"Ad group {a.group_id}")
                row.ad_group.status = cust.statuses.get(a.group_id, "ENABLED")  # type: ignore[assignment]
                row.ad_group_ad.ad.id = a.entity_id
                row.ad_group_ad.ad.name = cust.names.get(a.entity_id, f"Ad {a.entity_id}")
                row.ad_group_ad.status = cust.statuses.get(a.entity_id, "ENABLED")  # type: ignore[assignment]
            rows.append(row)
        for i in range(0, max(len(rows), 1), self.batch_size):
            yield svc.SearchGoogleAdsStreamResponse(results=rows[i : i + self.batch_size], request_id="fake-req")

    @contextmanager
    def running(self, tls: tuple[bytes, bytes] | None = None) -> Iterator[FakeGoogleAds]:
        """Serve until the block ends; ``tls`` = (certificate chain PEM, key PEM), default
        the process's self-signed certificate (see :func:`trust_fake_roots`)."""
        assert _MATERIAL is not None
        cert, key = tls if tls is not None else _MATERIAL[:2]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "SearchStream": grpc.unary_stream_rpc_method_handler(
                self.search_stream,
                request_deserializer=svc.SearchGoogleAdsStreamRequest.deserialize,
                response_serializer=svc.SearchGoogleAdsStreamResponse.serialize,
            )
        })
        mutates = [
            grpc.method_handlers_generic_handler(f"{_SERVICES}.{service}", {
                method: grpc.unary_unary_rpc_method_handler(
                    lambda req, ctx, service=service: self._mutate(service, req, ctx),
                    request_deserializer=req_t.deserialize,
                    response_serializer=resp_t.serialize,
                )
            })
            for service, (method, req_t, resp_t, _, _) in MUTATES.items()
        ]
        server.add_generic_rpc_handlers((handler, *mutates))
        self.port = server.add_secure_port("localhost:0", grpc.ssl_server_credentials([(key, cert)]))
        server.start()
        try:
            yield self
        finally:
            server.stop(0).wait()
