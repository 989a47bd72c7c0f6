"""What an alert says, for Slack (Block Kit + text fallback) and email (subject + body).

Pure: the notifier looks up entity names and action outcomes and passes them in, so the
wording is tested without a network, and Slack and email never disagree on a number.
Numbers are the ones that fired (``observed``), money in the account currency, ratios as
the dashboard shows them (ROAS ``2.10x``, CTR in percent); an undefined ratio is "n/a".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlencode

from schemas.alerts import MAX_ALERTS_PER_MESSAGE, AlertV1, EmailContent

# Block Kit allows 50 blocks per message.  The first DETAILED alerts of a batch get their
# own section (3 blocks each); in an alert storm the rest are listed compactly, ten linked
# lines per context block, so one message per second per webhook drains any burst of up
# to MAX_ALERTS_PER_MESSAGE instead of queueing it for minutes.
DETAILED_ALERTS = 10
_PER_CONTEXT = 10
SLACK_TEXT_LIMIT = 3000  # characters per section text

_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹", "BRL": "R$", "AUD": "A$", "CAD": "C$"}
_MONEY = ("spend", "revenue", "cpa", "cpc", "cpm")
_LABELS = {
    "spend": "Spend", "revenue": "Revenue", "conversions": "Conversions", "roas": "ROAS", "cpa": "CPA",
    "cpc": "CPC", "ctr": "CTR", "cpm": "CPM", "impressions": "Impressions", "clicks": "Clicks",
}
_ORDER = ("spend", "conversions", "revenue", "roas", "cpa", "impressions", "clicks", "ctr", "cpc", "cpm")
_LEVELS = {"ad": "Ad", "adset": "Ad set", "campaign": "Campaign", "asset_group": "Asset group"}
_PROVIDERS = {"meta": "Meta", "google": "Google Ads"}


def as_payload(alert: AlertV1 | Mapping[str, Any]) -> dict[str, Any]:
    """The alert as its JSON dict (the ``alerts.payload`` shape), whichever way it came."""
    if isinstance(alert, AlertV1):
        return alert.model_dump(mode="json", by_alias=True)
    return dict(alert)


def _dec(v: Any) -> Decimal | None:
    if v is None:
        return None
    try:
        return Decimal(str(v))
    except InvalidOperation:
        return None


def format_money(value: Any, currency: str) -> str:
    d = _dec(value)
    if d is None:
        return "n/a"
    places = Decimal(1) if currency.upper() == "JPY" else Decimal("0.01")
    amount = f"{d.quantize(places):,}"
    sym = _SYMBOLS.get(currency.upper())
    if sym is None:
        return f"{amount} {currency.upper()}"
    return f"-{sym}{amount[1:]}" if amount.startswith("-") else f"{sym}{amount}"


def format_metric(metric: str, value: Any, currency: str) -> str:
    """One observed value as people read it; ``None`` (zero denominator) is "n/a"."""
    d = _dec(value)
    if d is None:
        return "n/a"
    if metric in _MONEY:
        return format_money(d, currency)
    if metric == "roas":
        return f"{d.quantize(Decimal('0.01'))}x"
    if metric == "ctr":
        return f"{(d * 100).quantize(Decimal('0.01'))}%"
    if d == d.to_integral_value():
        return f"{int(d):,}"
    return f"{d.normalize():f}"


def observed_lines(payload: Mapping[str, Any]) -> list[str]:
    observed: Mapping[str, Any] = payload.get("observed") or {}
    currency = str(payload.get("currency", ""))
    keys = [k for k in _ORDER if k in observed] + sorted(k for k in observed if k not in _ORDER)
    return [f"{_LABELS.get(k, k)}: {format_metric(k, observed[k], currency)}" for k in keys]


def entity_label(payload: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """``Ad "Summer sale – video 3" (123)`` when the name is known, the id otherwise."""
    eid = str(payload.get("entity_id", ""))
    level = _LEVELS.get(str(payload.get("entity_level", "")), str(payload.get("entity_level", "")))
    name = names.get(eid)
    return f'{level} "{name}" ({eid})' if name else f"{level} {eid}"


def _context(payload: Mapping[str, Any], names: Mapping[str, str]) -> str:
    parts = [_PROVIDERS.get(str(payload.get("provider")), str(payload.get("provider"))),
             f"account {payload.get('account_id')}"]
    campaign = payload.get("campaign_id")
    if campaign and campaign != payload.get("entity_id"):
        parts.append(f'campaign "{names[campaign]}"' if names.get(campaign) else f"campaign {campaign}")
    adset = payload.get("adset_id")
    if adset and adset != payload.get("entity_id"):
        parts.append(f'ad set "{names[adset]}"' if names.get(adset) else f"ad set {adset}")
    parts.append(f"day {payload.get('report_date')} ({payload.get('timezone')})")
    return " · ".join(parts)


def action_text(payload: Mapping[str, Any], outcome: str | None) -> str | None:
    """What happened to the entity: ``outcome`` is the ``entity_actions`` row's, if any."""
    actions: Mapping[str, Any] = payload.get("actions") or {}
    recovered = payload.get("kind") == "recovered"
    if recovered:
        if not actions.get("resume"):
            return None
        verb, done = "resume", "Resumed"
    else:
        pause: Mapping[str, Any] = actions.get("pause") or {}
        if not pause.get("enabled"):
            return None
        if pause.get("dry_run"):
            return "Action: paused (dry run) — nothing was changed on the platform"
        verb, done = "pause", "Paused"
    if outcome == "done":
        return f"Action: {done} on the platform"
    if outcome == "failed":
        return f"Action: {verb} FAILED — check the entity on the platform"
    if outcome == "would":
        return f"Action: {done.lower()} (dry run) — nothing was changed on the platform"
    if recovered:
        return "Action: not resumed — metricx had not paused it"
    return f"Action: {verb} requested"


def headline(payload: Mapping[str, Any], names: Mapping[str, str]) -> str:
    rule = payload.get("rule_name", "rule")
    who = entity_label(payload, names)
    if payload.get("kind") == "recovered":
        return f"Recovered: {who} passes “{rule}” again"
    return f"Alert: {who} — “{rule}”"


def dashboard_link(payload: Mapping[str, Any], dashboard_url: str) -> str:
    query = urlencode({"entity": f"{payload.get('provider')}:{payload.get('account_id')}:{payload.get('entity_id')}",
                       "date": str(payload.get("report_date"))})
    return f"{dashboard_url.rstrip('/')}/?{query}#alert={quote(str(payload.get('fingerprint', '')), safe='')}"


def _condition_line(payload: Mapping[str, Any]) -> str:
    window = str(payload.get("window", ""))
    if window.startswith("hours:"):
        w = f"last {window[6:]} hours"
    elif window.startswith("days:"):
        w = f"last {window[5:]} days"
    else:
        w = window or "today"
    return f"{payload.get('conditions', '')} ({w})"


def _clip(text: str, limit: int = SLACK_TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _esc(text: str) -> str:
    """Slack mrkdwn control characters (names come from merchants)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def text_for(payload: Mapping[str, Any], names: Mapping[str, str], outcome: str | None = None) -> str:
    lines = [headline(payload, names), f"Condition: {_condition_line(payload)}", ", ".join(observed_lines(payload))]
    act = action_text(payload, outcome)
    if act:
        lines.append(act)
    return "\n".join(lines)


def slack_message(
    alerts: Sequence[AlertV1 | Mapping[str, Any]],
    names: Mapping[str, str],
    dashboard_url: str,
    outcomes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One webhook body for up to :data:`MAX_ALERTS_PER_MESSAGE` alerts (a batch when
    many fire together, so 1 message/s per webhook never builds a backlog): the first
    :data:`DETAILED_ALERTS` in full, the others one linked line each."""
    if not alerts:
        raise ValueError("no alerts to render")
    if len(alerts) > MAX_ALERTS_PER_MESSAGE:
        raise ValueError(f"at most {MAX_ALERTS_PER_MESSAGE} alerts per message, got {len(alerts)}")
    outcomes = outcomes or {}
    payloads = [as_payload(a) for a in alerts]
    blocks: list[dict[str, Any]] = []
    if len(payloads) > 1:
        fired = sum(1 for p in payloads if p.get("kind") != "recovered")
        title = f"metricx: {fired} alert(s), {len(payloads) - fired} recovery notice(s)"
        blocks.append({"type": "header", "text": {"type": "plain_text", "text": title[:150]}})
    texts: list[str] = []
    detailed, listed = payloads[:DETAILED_ALERTS], payloads[DETAILED_ALERTS:]
    for p in detailed:
        outcome = outcomes.get(str(p.get("fingerprint")))
        icon = ":white_check_mark:" if p.get("kind") == "recovered" else ":rotating_light:"
        body = [f"{icon} *{_esc(headline(p, names))}*", f"_{_esc(_context(p, names))}_",
                f"*Condition:* `{_esc(_condition_line(p))}`", " · ".join(_esc(x) for x in observed_lines(p))]
        act = action_text(p, outcome)
        if act:
            body.append(f"*{_esc(act)}*")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip("\n".join(body))}})
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"<{dashboard_link(p, dashboard_url)}|Open in metricx>"}]})
        blocks.append({"type": "divider"})
        texts.append(text_for(p, names, outcomes.get(str(p.get("fingerprint")))))
    if listed:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*…and {len(listed)} more:*"}})
        # Each line keeps its whole link (the fingerprint is in it); only the label is cut.
        lines = [{"type": "mrkdwn", "text": f"<{dashboard_link(p, dashboard_url)}|{_esc(_clip(headline(p, names), 150))}>"
                  f" ({_esc(_clip(' · '.join(observed_lines(p)), 200))})"} for p in listed]
        blocks.extend({"type": "context", "elements": lines[i:i + _PER_CONTEXT]}
                      for i in range(0, len(lines), _PER_CONTEXT))
        texts.append(f"...and {len(listed)} more alerts in metricx")
    if blocks and blocks[-1]["type"] == "divider":
        blocks.pop()
    return {"text": _clip("\n\n".join(texts), 4000), "blocks": blocks}


def email_message(
    alert: AlertV1 | Mapping[str, Any],
    names: Mapping[str, str],
    dashboard_url: str,
    outcome: str | None = None,
) -> EmailContent:
    p = as_payload(alert)
    subject = "[metricx] " + headline(p, names)
    lines = [
        headline(p, names),
        "",
        _context(p, names),
        f"Rule: {p.get('rule_name')} (version {p.get('rule_version')})",
        f"Condition: {_condition_line(p)}",
        "",
        *observed_lines(p),
    ]
    act = action_text(p, outcome)
    if act:
        lines += ["", act]
    lines += ["", f"Open in metricx: {dashboard_link(p, dashboard_url)}", "",
              f"Alert id: {p.get('fingerprint')}"]
    return EmailContent(subject=" ".join(subject.split())[:250], text="\n".join(lines) + "\n")
