"""Stop-loss figures, printed (never asserted): ``python -m tests.bench.bench_stoploss``.

Rule-evaluation cost: the same simulated topic (default 300,000 snapshots over 50,000
ads, as many as the backbone benchmark) is consumed by the Bytewax pipeline twice into
empty databases — once without the stop-loss step, once with 1,000 active rules
published on the rules topic — and the throughputs are compared (target ratio >= 0.8).
Each figure is measured on TimescaleDB and on plain PostgreSQL in the same run
(``tests.bench.flavours``).

The rules are an agency's: per workspace, per ad account, a few rules scoped to that
account (ad-level burn and ROAS rules, an ad-set CPA rule over 3 days, a campaign
spend cap), so every snapshot meets the handful of rules of its own account, as in
production, and some of them fire.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from adapters.kafka import Producer, delete_topics, ensure_topics
from domain.sim.world import World, build_world_for_entities
from ground.settings import REPO_ROOT, Settings, load_settings
from pollers.sim import run_bulk
from schemas.rules import RuleV1, rule_message
from schemas.topics import TopicSpec, deadletter_topic_spec, raw_topic_spec
from tests.bench import flavours as fl
from tests.bench.run_bench import RunResult, drop_database, fresh_database, run_engine
from tests.integration.totals import progress


class _Skip(Exception):
    pass


def _cond(metric: str, op: str, value: str) -> dict[str, str]:
    return {"metric": metric, "operator": op, "value": value}


def agency_rules(world: World, total: int, seed: int = 7) -> list[RuleV1]:
    """``total`` rules spread over the world's accounts, four kinds per account, each
    with its own thresholds (no two rules of an account are the same question)."""
    rnd = random.Random(seed)
    now = datetime.now(UTC).isoformat()
    kinds: list[Callable[[], dict[str, Any]]] = [
        lambda: {"scope": {"level": "ad"}, "guards": {"min_impressions": 1000}, "conditions": {
            "op": "and", "conditions": [_cond("spend", ">=", str(rnd.randint(60, 120))), _cond("conversions", "=", "0")]}},
        lambda: {"scope": {"level": "ad"}, "guards": {"min_spend": "100"}, "trigger": {"mode": "cooldown", "minutes": 240},
                 "conditions": {"op": "and", "conditions": [_cond("roas", "<", f"0.{rnd.randint(3, 8)}")]}},
        lambda: {"scope": {"level": "adset"}, "window": {"kind": "days", "n": 3}, "conditions": {
            "op": "or", "conditions": [_cond("cpa", ">", str(rnd.randint(50, 120))), _cond("ctr", "<", "0.002")]}},
        lambda: {"scope": {"level": "campaign"}, "conditions": {
            "op": "and", "conditions": [_cond("spend", ">", str(rnd.randint(3000, 8000)))]}},
    ]
    rules: list[RuleV1] = []
    accounts = list(world.accounts)
    i = 0
    while len(rules) < total:
        acc = accounts[(i // len(kinds)) % len(accounts)]
        kind = kinds[i % len(kinds)]()
        scope = {**kind["scope"], "account_ids": [acc.id]}
        rules.append(RuleV1.model_validate({
            "id": str(uuid.uuid4()), "workspace_id": acc.workspace_id, "name": f"rule {i}",
            "updated_at": now, **{**kind, "scope": scope},
        }))
        i += 1
    return rules


def publish_rules(settings: Settings, topic: str, rules: Iterable[RuleV1]) -> None:
    p = Producer(settings.kafka.bootstrap, client_id="bench-rules")
    for r in rules:
        p.send(topic, rule_message(r), str(r.id))
    p.flush()


def count_alerts(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM alerts").fetchone()
    return int(row[0]) if row else 0


def _produce(bootstrap: str, world: World, total: int, rate: float, topic: str) -> None:
    run_bulk(Producer(bootstrap, client_id="bench-lat", linger_ms=1), world,
             snapshots=total, seed=11, end_utc=datetime.now(UTC), rate=rate, topic=topic)


def alert_latency(settings: Settings, workdir: Path, world: World, rules_total: int, rate: float,
                  seconds: float, flavour: str) -> dict[str, Any]:
    """Snapshot produced into Kafka -> Slack webhook request received, per alert, with
    the pipeline, the notifier and a local Slack (one webhook per workspace) running
    while simulated polls arrive at a steady ``rate``."""
    from adapters import channels_store as channels
    from tests.fakes.slack_server import FakeSlack, fingerprints_in
    from tests.notifier.factory import KEY, keyring, workspace

    suffix = uuid.uuid4().hex[:6]
    topic, dl, rules_topic, alerts_topic = (f"metricx.bench.lat{n}.{suffix}" for n in ("raw", "dl", "rules", "alerts"))
    ensure_topics(settings.kafka.bootstrap, [raw_topic_spec(topic, 4), deadletter_topic_spec(dl), TopicSpec(alerts_topic, 1),
                                             TopicSpec(rules_topic, 1, {"cleanup.policy": "compact"})])
    url = fresh_database(settings, "slat", flavour)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with FakeSlack().running() as slack:
            hooks: dict[str, uuid.UUID] = {}
            with psycopg.connect(url, autocommit=True) as conn:
                for ws in world.workspaces:
                    workspace(conn, uuid.UUID(ws.id))
                    hooks[ws.id] = channels.create(conn, keyring(), uuid.UUID(ws.id), "slack", "alerts",
                                                   slack.hook(ws.id)).id
            rules = [r.model_copy(update={"actions": r.actions.model_copy(update={"notify": [hooks[str(r.workspace_id)]]})})
                     for r in agency_rules(world, rules_total)]
            publish_rules(settings, rules_topic, rules)
            env = {**os.environ, "METRICX_RAW_TOPIC": topic, "METRICX_DEADLETTER_TOPIC": dl,
                   "METRICX_RULES_TOPIC": rules_topic, "METRICX_ALERTS_TOPIC": alerts_topic,
                   "METRICX_DATABASE_URL": url, "METRICX_DATA_DIR": str(workdir / f"lat-{int(rate)}-{flavour}"),
                   "METRICX_TOKEN_KEYS": f"k1:{KEY}", "METRICX_TOKEN_KEY_ID": "k1",
                   "METRICX_NOTIFIER_GROUP_ID": f"bench-{suffix}", "METRICX_RULES_WARMUP_S": "1800"}
            for name in ("pipeline", "notifier"):
                with open(workdir / f"lat-{name}-{flavour}.log", "wb") as out:
                    procs.append(subprocess.Popen([sys.executable, "-m", "metricx.cli", name], env=env, stdout=out,
                                                  stderr=subprocess.STDOUT, cwd=REPO_ROOT))
            log = workdir / f"lat-pipeline-{flavour}.log"
            deadline = time.monotonic() + 90
            while "kafka partition assigned" not in log.read_text(errors="replace"):
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"pipeline/notifier did not start; see {workdir}")
                time.sleep(0.2)
            time.sleep(2)
            total = int(rate * seconds)
            began = time.monotonic()
            # The load is produced from another process: in this one it would hold the
            # GIL against the local Slack and delay (and mis-time) its answers.
            producer = multiprocessing.get_context("fork").Process(
                target=_produce, args=(settings.kafka.bootstrap, world, total, rate, topic))
            producer.start()
            producer.join()
            if producer.exitcode != 0:
                raise RuntimeError(f"the load producer exited with {producer.exitcode}")
            achieved = total / (time.monotonic() - began)
            deadline = time.monotonic() + 300
            while progress(url, topic) < total and time.monotonic() < deadline:
                time.sleep(0.5)
            settle = time.monotonic() + 120
            while time.monotonic() < settle:
                with psycopg.connect(url) as conn:
                    row = conn.execute("SELECT count(*) FROM alerts a WHERE a.kind = 'fired' AND NOT EXISTS "
                                       "(SELECT 1 FROM alert_deliveries d WHERE d.fingerprint = a.fingerprint "
                                       "AND d.status IN ('sent', 'dead', 'unknown'))").fetchone()
                if row is not None and row[0] == 0:
                    break
                time.sleep(1)
            received: dict[str, float] = {}
            for r in slack.received:
                if r.answered == 200:
                    for fp in fingerprints_in(r.body):
                        received.setdefault(fp, r.at)
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT a.fingerprint, extract(epoch FROM s.produced_at), extract(epoch FROM a.created_at), "
                "(SELECT extract(epoch FROM min(d.created_at)) FROM alert_deliveries d WHERE d.fingerprint = a.fingerprint) "
                "FROM alerts a JOIN insight_snapshots s "
                "ON s.workspace_id = a.workspace_id AND s.provider = a.provider AND s.account_id = a.account_id "
                "AND s.entity_id = a.entity_id AND s.captured_at = a.captured_at "
                "WHERE a.kind = 'fired' AND a.entity_level = 'ad' AND s.produced_at IS NOT NULL").fetchall()
            n_alerts = conn.execute("SELECT count(*) FROM alerts").fetchone()
        lat = sorted(received[fp] - float(produced) for fp, produced, _, _ in rows if fp in received)
        # Where the time goes: produced -> alert row committed by the pipeline, and
        # committed -> request received by Slack (the notifier).
        pipe = sorted(float(stored) - float(produced) for _, produced, stored, _ in rows)
        notify = sorted(received[fp] - float(stored) for fp, _, stored, _ in rows if fp in received)
        queued = sorted(float(q) - float(stored) for _, _, stored, q in rows if q is not None)

        def pct(xs: list[float], q: float) -> float:
            return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000) if xs else float("nan")

        return {"flavour": flavour, "rate_target": rate, "rate_achieved": round(achieved), "snapshots": total,
                "alerts": int(n_alerts[0]) if n_alerts else 0, "measured": len(lat),
                "delivered_to_slack": len(received), "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
                "max_ms": pct(lat, 1.0), "pipeline_p50_ms": pct(pipe, 0.5), "pipeline_p99_ms": pct(pipe, 0.99),
                "notifier_p50_ms": pct(notify, 0.5), "notifier_p99_ms": pct(notify, 0.99),
                "to_outbox_p50_ms": pct(queued, 0.5), "to_outbox_p99_ms": pct(queued, 0.99)}
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        drop_database(settings, url)
        delete_topics(settings.kafka.bootstrap, [topic, dl, rules_topic, alerts_topic])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--snapshots", type=int, default=300_000)
    ap.add_argument("--entities", type=int, default=50_000)
    ap.add_argument("--rules", type=int, default=1_000)
    ap.add_argument("--latency-rates", default="10000,2500,1000",
                    help="steady produce rates for the alert latency runs (the target, then sustainable ones)")
    ap.add_argument("--latency-seconds", type=float, default=30)
    ap.add_argument("--skip-throughput", action="store_true")
    fl.add_argument(ap)
    args = ap.parse_args()

    settings = load_settings()
    flavours = fl.chosen(settings, args.flavours)
    workdir = Path(tempfile.mkdtemp(prefix="metricx-bench-stoploss-"))
    suffix = uuid.uuid4().hex[:6]
    topic, dl, rules_topic, alerts_topic = (f"metricx.bench.{n}.{suffix}" for n in ("raw", "dl", "rules", "alerts"))
    ensure_topics(settings.kafka.bootstrap, [raw_topic_spec(topic, 4), deadletter_topic_spec(dl), TopicSpec(alerts_topic, 1),
                                             TopicSpec(rules_topic, 1, {"cleanup.policy": "compact"})])
    results: dict[str, Any] = {"snapshots": args.snapshots, "entities": args.entities, "rules": args.rules,
                               "flavours": flavours, "cpus": os.cpu_count(), "started": datetime.now(UTC).isoformat()}
    runs: list[RunResult] = []
    labels = ("no rules", f"{args.rules} rules")
    try:
        if args.skip_throughput:
            raise _Skip
        print(f"producing {args.snapshots:,} snapshots over {args.entities:,} ads ...", flush=True)
        world = build_world_for_entities(7, args.entities)
        run_bulk(Producer(settings.kafka.bootstrap, client_id="bench-load"), world, snapshots=args.snapshots,
                 seed=7, end_utc=datetime.now(UTC), topic=topic)
        publish_rules(settings, rules_topic, agency_rules(world, args.rules))
        base = {**os.environ, "METRICX_RAW_TOPIC": topic, "METRICX_DEADLETTER_TOPIC": dl,
                "METRICX_RULES_TOPIC": rules_topic, "METRICX_ALERTS_TOPIC": alerts_topic,
                "METRICX_RULES_WARMUP_S": "1800"}
        for label, extra in zip(labels, ({"METRICX_RULES_ENABLED": "false"}, {"METRICX_RULES_ENABLED": "true"}),
                                strict=True):
            for flavour in flavours:
                url = fresh_database(settings, "sl", flavour)
                tag = f"{label.replace(' ', '_')}-{flavour}"
                env = {**base, **extra, "METRICX_DATABASE_URL": url, "METRICX_DATA_DIR": str(workdir / tag)}
                print(f"running bytewax with {label} on {fl.LABELS[flavour]} ...", flush=True)
                try:
                    r = run_engine(label, [sys.executable, "-m", "metricx.cli", "pipeline"], env, url, topic,
                                   args.snapshots, workdir / f"{tag}.log")
                    alerts = count_alerts(url)
                finally:
                    drop_database(settings, url)
                r.flavour = flavour
                print(f"  {label} on {fl.LABELS[flavour]}: {r.per_s:,.0f}/s end to end, steady "
                      f"{r.steady_per_s:,.0f}/s, peak RSS {r.peak_rss_mb} MB, {alerts:,} alerts", flush=True)
                runs.append(r)
                results[f"{label} on {flavour}"] = {**r.__dict__, "alerts": alerts}
    except _Skip:
        pass
    finally:
        delete_topics(settings.kafka.bootstrap, [topic, dl, rules_topic, alerts_topic])

    def fig(label: str, attr: str) -> dict[str, float | None]:
        return {f: next((getattr(r, attr) for r in runs if r.engine == label and r.flavour == f), None)
                for f in flavours}

    def ratio(attr: str) -> dict[str, float | None]:
        without, with_rules = fig(labels[0], attr), fig(labels[1], attr)
        return {f: round(w / o, 3) if (w := with_rules[f]) and (o := without[f]) else None for f in flavours}

    if runs:
        results["ratio"], results["ratio_steady"] = ratio("per_s"), ratio("steady_per_s")
    latencies: list[dict[str, Any]] = []
    for rate in (float(x) for x in args.latency_rates.split(",") if x):
        for flavour in flavours:
            print(f"alert latency at a steady {rate:,.0f} snapshots/s for {args.latency_seconds:.0f}s on "
                  f"{fl.LABELS[flavour]} ...", flush=True)
            lat = alert_latency(settings, workdir, build_world_for_entities(7, args.entities), args.rules, rate,
                                args.latency_seconds, flavour)
            latencies.append(lat)
            print(f"  {lat}", flush=True)
    results["latency"] = latencies
    out = settings.data_dir / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "stoploss.json").write_text(json.dumps(results, indent=2, default=str))
    print("\n== metricx stop-loss benchmark ==")
    if runs:
        print(fl.side_by_side("figure", [
            (f"{labels[0]}, snapshots/s end to end", fig(labels[0], "per_s")),
            (f"{labels[0]}, snapshots/s steady", fig(labels[0], "steady_per_s")),
            (f"{labels[1]}, snapshots/s end to end", fig(labels[1], "per_s")),
            (f"{labels[1]}, snapshots/s steady", fig(labels[1], "steady_per_s")),
            (f"{labels[1]}, peak RSS MB", fig(labels[1], "peak_rss_mb")),
        ], flavours))
        print(fl.side_by_side("ratio with / without rules (target >= 0.8)",
                              [("end to end", results["ratio"]), ("steady", results["ratio_steady"])],
                              flavours, fmt=lambda v: f"{v:.3f}"))
    rows: list[tuple[str, dict[str, float | None]]] = []
    for rate in sorted({lat["rate_target"] for lat in latencies}, reverse=True):
        at = {lat["flavour"]: lat for lat in latencies if lat["rate_target"] == rate}
        rows.extend((f"snapshot->Slack at {rate:,.0f}/s, {name}",
                     {f: at[f][key] if f in at else None for f in flavours})
                    for name, key in (("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("produce->stored p99 ms",
                                      "pipeline_p99_ms"), ("stored->Slack p99 ms", "notifier_p99_ms")))
    if rows:
        print(fl.side_by_side("alert latency (target p99 <= 2,000 ms at 10,000/s)", rows, flavours))
    print(f"  details: {out / 'stoploss.json'}, logs in {workdir}")


if __name__ == "__main__":
    main()
