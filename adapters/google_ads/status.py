"""Set the status of one Google Ads ad, ad group, campaign or asset group (pause/resume).

The thin SDK-touching part of the stop-loss action: one ``Mutate*`` call of the matching
service with a single ``update`` operation on ``status`` (update mask ``status``, nothing
else touched), with the connection's own credentials, developer token and
``login_customer_id``.  Errors come out as :class:`GoogleStatusError` with a message built
from the ``GoogleAdsFailure`` (codes and platform messages, secrets redacted).  Whether to
call it at all, and only once, is the caller's business (``notifier.actions``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.ads.googleads.errors import GoogleAdsException
from google.api_core.exceptions import GoogleAPICallError
from google.protobuf import field_mask_pb2

from adapters.google_ads.client import GoogleAccount, GoogleApi, build_client, credentials_for, refresh
from adapters.google_ads.logic import FailureInfo
from adapters.google_ads.poller import failure_info, info_from_rpc
from adapters.platform import SyncFailure, redact


@dataclass(frozen=True)
class _Level:
    service: str  # SDK service name
    operation: str  # operation type name
    method: str  # service client method
    collection: str  # resource-name collection
    status_enum: str  # the resource's status enum


LEVELS: dict[str, _Level] = {
    "ad": _Level("AdGroupAdService", "AdGroupAdOperation", "mutate_ad_group_ads", "adGroupAds", "AdGroupAdStatusEnum"),
    "adset": _Level("AdGroupService", "AdGroupOperation", "mutate_ad_groups", "adGroups", "AdGroupStatusEnum"),
    "campaign": _Level("CampaignService", "CampaignOperation", "mutate_campaigns", "campaigns", "CampaignStatusEnum"),
    "asset_group": _Level("AssetGroupService", "AssetGroupOperation", "mutate_asset_groups", "assetGroups",
                          "AssetGroupStatusEnum"),
}


class GoogleStatusError(RuntimeError):
    """The platform refused (or never answered) the status change; ``str()`` is safe to store."""

    def __init__(self, message: str, info: FailureInfo | None = None) -> None:
        super().__init__(message)
        self.info = info


def _id(value: str | None, what: str) -> str:
    v = (value or "").replace("-", "")
    if not v.isdigit():
        raise ValueError(f"google {what} must be digits, got {value!r}")
    return v


def resource_name(customer_id: str, level: str, entity_id: str, ad_group_id: str | None = None) -> str:
    """``customers/{cid}/adGroupAds/{ad_group_id}~{ad_id}`` for an ad, ``.../adGroups/{id}``,
    ``.../campaigns/{id}``, ``.../assetGroups/{id}`` (customer id without dashes)."""
    lv = LEVELS.get(level)
    if lv is None:
        raise ValueError(f"google cannot set status on level {level!r}")
    cid = _id(customer_id, "customer id")
    eid = _id(entity_id, f"{level} id")
    if level == "ad":
        return f"customers/{cid}/{lv.collection}/{_id(ad_group_id, 'ad group id')}~{eid}"
    return f"customers/{cid}/{lv.collection}/{eid}"


class GoogleStatusSetter:
    """Sets ``status`` (PAUSED / ENABLED) on an ad, ad group, campaign or asset group."""

    def __init__(self, endpoint: str | None = None, timeout_s: float = 30.0, *, api: GoogleApi | None = None) -> None:
        self.api = api if api is not None else GoogleApi(endpoint=endpoint or None)
        self.endpoint = self.api.endpoint
        self.timeout_s = timeout_s

    def __call__(self, account: GoogleAccount, level: str, entity_id: str, ad_group_id: str | None,
                 status: str) -> str:
        """Returns the resource name the API confirmed."""
        if status not in ("PAUSED", "ENABLED"):
            raise ValueError(f"google status must be PAUSED or ENABLED, got {status!r}")
        name = resource_name(account.customer_id, level, entity_id, ad_group_id)
        lv = LEVELS[level]
        creds = credentials_for(account, self.api)
        try:
            refresh(creds, account, self.api)  # the refresh grant, at the configured token endpoint
        except SyncFailure as exc:
            raise GoogleStatusError(exc.message) from None
        client = build_client(account, self.api, creds)
        op: Any = client.get_type(lv.operation)
        op.update.resource_name = name
        op.update.status = getattr(getattr(client.enums, lv.status_enum), status)
        op.update_mask = field_mask_pb2.FieldMask(paths=["status"])
        service: Any = client.get_service(lv.service)
        try:
            response = getattr(service, lv.method)(customer_id=_id(account.customer_id, "customer id"),
                                                   operations=[op], timeout=self.timeout_s)
        except GoogleAdsException as exc:
            info = failure_info(exc.error.code(), exc.failure)
            raise self._error(account, info, exc.request_id) from None
        except GoogleAPICallError as exc:
            # RESOURCE_EXHAUSTED / INTERNAL pass the SDK's interceptor unwrapped (see the poller).
            info = info_from_rpc(exc.response if isinstance(exc.response, grpc.RpcError) else exc)
            raise self._error(account, info, None) from None
        except grpc.RpcError as exc:
            raise self._error(account, info_from_rpc(exc), None) from None
        finally:
            service.transport.close()  # one channel per call: actions are rare
        return str(response.results[0].resource_name) if response.results else name

    @staticmethod
    def _error(account: GoogleAccount, info: FailureInfo, request_id: str | None) -> GoogleStatusError:
        codes = ",".join(info.error_values)
        text = f"google error {info.status}{' ' + codes if codes else ''}: {info.message}"
        if request_id:
            text += f" (request {request_id})"
        return GoogleStatusError(redact(text, account.secrets()), info)
