"""A local HTTP server that plays the Meta Graph API for the real ``facebook-business`` SDK.

It serves what the pollers read, in the documented shapes: ``GET /<v>/act_<id>``
(``timezone_name``, ``currency``), ``GET /<v>/act_<id>/insights`` (level=ad,
time_increment=1 rows with decimal strings, overlapping purchase action types, cursor
paging with ``paging.cursors.after`` + ``paging.next``), usage headers, and error bodies
(``{"error": {"code": 17, ...}}``).  Tests script failures with :meth:`FakeGraphApi.fail_next`.

The truth it reports is held per ad-day (:class:`AdDay`); tests compute expectations from
that truth, never from the code under test.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

PURCHASE_VIEWS = ("omni_purchase", "purchase", "offsite_conversion.fb_pixel_purchase", "onsite_web_purchase")


@dataclass
class AdDay:
    campaign_id: str
    adset_id: str
    ad_id: str
    day: date
    spend: Decimal
    impressions: int
    clicks: int
    purchases: Decimal = Decimal(0)
    revenue: Decimal = Decimal(0)
    # Which purchase views Meta reports for this row (all carry the same purchases).
    purchase_views: tuple[str, ...] = PURCHASE_VIEWS


@dataclass
class FakeAccount:
    account_id: str
    token: str
    timezone: str = "America/New_York"
    currency: str = "USD"
    days: dict[tuple[str, date], AdDay] = field(default_factory=dict)
    # Graph API objects per edge ("campaigns", "adsets", "ads"), as the API returns them.
    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def put(self, row: AdDay) -> None:
        self.days[(row.ad_id, row.day)] = row


@dataclass
class ScriptedError:
    code: int
    status: int = 400
    headers: dict[str, str] = field(default_factory=dict)
    subcode: int | None = None


@dataclass
class Request:
    path: str
    params: dict[str, str]
    method: str = "GET"


@dataclass
class StatusUpdate:
    """A ``POST /<v>/<ad|adset|campaign id>`` with ``status`` (pause / resume)."""

    object_id: str
    status: str
    token: str | None


@dataclass
class ReportRun:
    run_id: str
    account_id: str
    params: dict[str, str]
    polls_left: int
    failed: bool


def _row_json(account_id: str, r: AdDay) -> dict[str, Any]:
    actions: list[dict[str, str]] = [{"action_type": "link_click", "value": str(r.clicks)}]
    values: list[dict[str, str]] = []
    if r.purchases:
        for v in r.purchase_views:
            actions.append({"action_type": v, "value": str(r.purchases)})
            values.append({"action_type": v, "value": str(r.revenue)})
    out: dict[str, Any] = {
        "account_id": account_id,
        "campaign_id": r.campaign_id,
        "adset_id": r.adset_id,
        "ad_id": r.ad_id,
        "date_start": r.day.isoformat(),
        "date_stop": r.day.isoformat(),
        "spend": str(r.spend),
        "impressions": str(r.impressions),
        "clicks": str(r.clicks),
        "actions": actions,
    }
    if values:
        out["action_values"] = values
    return out


class FakeGraphApi:
    def __init__(self, page_size: int = 25) -> None:
        self.accounts: dict[str, FakeAccount] = {}
        self.page_size = page_size
        self.requests: list[Request] = []
        self.usage_headers: dict[str, str] = {}
        self.raw_rows: dict[str, list[dict[str, Any]]] = {}  # extra malformed rows per account
        self._errors: list[ScriptedError] = []
        self.report_runs: dict[str, ReportRun] = {}
        self.status_updates: list[StatusUpdate] = []  # pause/resume calls, in arrival order
        self.status_delay_s = 0.0  # a slow platform: each status update takes this long
        self.status_in_flight = 0
        self.status_max_in_flight = 0  # the most status updates served at the same time
        self.running_polls = 1  # each report run says "Job Running" this many times first
        self.fail_runs_longer_than: int | None = None  # runs over more days end "Job Failed"
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- scripting ----------------------------------------------------------------------

    def add_account(self, account: FakeAccount) -> FakeAccount:
        self.accounts[account.account_id] = account
        return account

    def fail_next(self, *errors: ScriptedError) -> None:
        with self._lock:
            self._errors.extend(errors)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- serving ------------------------------------------------------------------------

    def handle(self, path: str, params: dict[str, str], method: str = "GET") -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.requests.append(Request(path, params, method))
            scripted = self._errors.pop(0) if self._errors else None
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[1] in self.report_runs:
            return self._report_run(parts, path, params)
        if method == "POST" and len(parts) == 2 and not parts[1].startswith("act_") and "status" in params:
            return self._set_status(parts[1], params, scripted)
        if len(parts) < 2 or not parts[1].startswith("act_"):
            return 404, _error(803, "Unknown path components"), {}
        acct = self.accounts.get(parts[1][4:])
        if acct is None:
            return 400, _error(100, "Unsupported get request."), {}
        if params.get("access_token") != acct.token:
            return 400, _error(190, "Error validating access token: Session has expired."), {}
        if scripted is not None:
            return scripted.status, _error(scripted.code, "scripted failure", scripted.subcode), scripted.headers
        if len(parts) == 2:
            return 200, {"id": f"act_{acct.account_id}", "timezone_name": acct.timezone, "currency": acct.currency}, dict(self.usage_headers)
        if parts[2] in ("campaigns", "adsets", "ads") and method == "GET":
            fields = set(params.get("fields", "").split(","))
            objs = [{k: v for k, v in o.items() if k in fields or k == "id"} for o in acct.objects.get(parts[2], [])]
            return self._page(objs, path, params)
        if parts[2] != "insights":
            return 400, _error(100, f"Unknown edge {parts[2]}"), {}
        if method == "POST":
            return self._start_run(acct, params)
        return self._insights(acct, path, params)

    # -- object updates (the notifier's pause / resume) -------------------------------------

    def _set_status(self, object_id: str, params: dict[str, str],
                    scripted: ScriptedError | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        token = params.get("access_token")
        if token not in {a.token for a in self.accounts.values()}:
            return 400, _error(190, "Error validating access token: Session has expired."), {}
        if scripted is not None:
            return scripted.status, _error(scripted.code, "scripted failure", scripted.subcode), scripted.headers
        if params["status"] not in ("ACTIVE", "PAUSED", "ARCHIVED", "DELETED"):
            return 400, _error(100, "Invalid parameter: status"), {}
        with self._lock:
            self.status_in_flight += 1
            self.status_max_in_flight = max(self.status_max_in_flight, self.status_in_flight)
        try:
            time.sleep(self.status_delay_s)
        finally:
            with self._lock:
                self.status_in_flight -= 1
                self.status_updates.append(StatusUpdate(object_id, params["status"], token))
        return 200, {"success": True}, dict(self.usage_headers)

    # -- asynchronous report runs (AdReportRun) ---------------------------------------------

    def _start_run(self, acct: FakeAccount, params: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        tr = json.loads(params["time_range"])
        span = (date.fromisoformat(tr["until"]) - date.fromisoformat(tr["since"])).days + 1
        failed = self.fail_runs_longer_than is not None and span > self.fail_runs_longer_than
        with self._lock:
            rid = str(6_000_000 + len(self.report_runs))
            self.report_runs[rid] = ReportRun(rid, acct.account_id, dict(params), self.running_polls, failed)
        return 200, {"report_run_id": rid}, dict(self.usage_headers)

    def _report_run(self, parts: list[str], path: str, params: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        run = self.report_runs[parts[1]]
        acct = self.accounts[run.account_id]
        if params.get("access_token") != acct.token:
            return 400, _error(190, "Error validating access token: Session has expired."), {}
        if len(parts) == 2:
            if run.polls_left > 0:
                run.polls_left -= 1
                status, pct = "Job Running", 50
            else:
                status, pct = ("Job Failed", 0) if run.failed else ("Job Completed", 100)
            return 200, {"id": run.run_id, "account_id": run.account_id, "async_status": status,
                         "async_percent_completion": pct}, {}
        if run.failed or run.polls_left > 0:
            return 400, _error(100, "report run is not complete"), {}
        merged = {**run.params, **{k: v for k, v in params.items() if k in ("after", "limit")}}
        return self._insights(acct, path, merged)

    def _insights(self, acct: FakeAccount, path: str, params: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if params.get("level") != "ad" or params.get("time_increment") != "1":
            return 400, _error(100, "fake supports level=ad, time_increment=1 only"), {}
        tr = json.loads(params["time_range"])
        since, until = date.fromisoformat(tr["since"]), date.fromisoformat(tr["until"])
        rows = [
            _row_json(acct.account_id, r)
            for (_, d), r in sorted(acct.days.items(), key=lambda kv: (kv[0][1], kv[0][0]))
            if since <= d <= until and r.impressions > 0
        ]
        rows += [r for r in self.raw_rows.get(acct.account_id, [])]
        return self._page(rows, path, params)

    def _page(self, rows: list[dict[str, Any]], path: str, params: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        limit = min(int(params.get("limit", "25")), self.page_size)
        start = int(base64.b64decode(params["after"]).decode()) if "after" in params else 0
        page = rows[start : start + limit]
        body: dict[str, Any] = {"data": page}
        end = start + len(page)
        cursors = {"before": base64.b64encode(str(start).encode()).decode(), "after": base64.b64encode(str(end).encode()).decode()}
        body["paging"] = {"cursors": cursors}
        if end < len(rows):
            nxt = dict(params)
            nxt["after"] = cursors["after"]
            body["paging"]["next"] = f"{self.url}{path}?{urlencode(nxt)}"
        return 200, body, dict(self.usage_headers)

    @contextmanager
    def running(self) -> Iterator[FakeGraphApi]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            # Headers and body are two writes: without this the body waits for the
            # client's delayed ACK (~40 ms per call), a cost the real API does not have.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                u = urlparse(self.path)
                params = {k: v[-1] for k, v in parse_qs(u.query).items()}
                self._reply(*fake.handle(u.path, params, "GET"))

            def do_POST(self) -> None:
                u = urlparse(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                params = {k: v[-1] for k, v in parse_qs(u.query).items()}
                params.update({k: v[-1] for k, v in parse_qs(body).items()})
                self._reply(*fake.handle(u.path, params, "POST"))

            def _reply(self, status: int, body: Any, headers: dict[str, str]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        t = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        t.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()


def _error(code: int, message: str, subcode: int | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "AbCdEfFake",
        "is_transient": code in (1, 2, 4, 17, 32, 613) or 80000 <= code <= 80014,
    }
    if subcode is not None:
        err["error_subcode"] = subcode
    return {"error": err}
