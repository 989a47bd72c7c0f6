"""``make bench``: the backbone's figures, printed (never asserted), on TimescaleDB and
on plain PostgreSQL in the same run (``tests.bench.flavours``).

1. 1,000,000 simulated snapshots over 50,000 entities are produced into a fresh topic.
2. The Bytewax pipeline (recovery on, as in production) consumes them into an empty
   database of each flavour: snapshots/s end to end and peak RSS.
3. The same logic as a plain Python consumer loop (``pipelines.plain``) consumes the
   same topic into another empty database of each flavour: the no-framework ceiling,
   and the ratio.  The four runs alternate flavours (Bytewax on TimescaleDB, then on
   PostgreSQL, then the loop likewise), so a drift of the machine's load does not fall
   on one flavour.
4. Latency: a fresh topic fed at a steady 10,000 snapshots/s while the pipeline runs;
   per snapshot, produce (Kafka timestamp) -> row inserted in the commit transaction.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

from adapters.kafka import Producer, delete_topics, ensure_topics
from domain.sim.world import build_world_for_entities
from ground.settings import REPO_ROOT, Settings, load_settings
from pollers.sim import run_bulk
from schemas.migrate import upgrade
from schemas.topics import TopicSpec, deadletter_topic_spec, raw_topic_spec
from tests.bench import flavours as fl
from tests.integration.totals import progress


@dataclass
class RunResult:
    engine: str
    snapshots: int
    seconds: float
    per_s: float
    steady_per_s: float
    peak_rss_mb: float
    flavour: str = ""


def fresh_database(settings: Settings, tag: str, flavour: str | None = None) -> str:
    """An empty database migrated into ``flavour`` (default: METRICX_TIMESCALEDB's choice)."""
    name = f"metricx_bench_{tag}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(settings.database.libpq_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = settings.database.libpq_url.rsplit("/", 1)[0] + "/" + name
    upgrade(url.replace("postgresql://", "postgresql+psycopg://", 1),
            fl.mode(flavour) if flavour else settings.database.timescaledb)
    return url


def drop_database(settings: Settings, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(settings.database.libpq_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def run_engine(engine: str, cmd: list[str], env: dict[str, str], url: str, topic: str, total: int,
               log: Path, timeout: float = 900) -> RunResult:
    with open(log, "wb") as out:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        ps = psutil.Process(proc.pid)
        peak = 0
        marks: dict[float, float] = {}
        done = 0
        try:
            while done < total:
                if proc.poll() is not None:
                    raise RuntimeError(f"{engine} exited with {proc.returncode}; see {log}")
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"{engine} did not finish in {timeout}s ({done}/{total}); see {log}")
                peak = max(peak, tree_rss(ps))
                done = progress(url, topic)
                for frac in (0.1, 0.9):
                    if frac not in marks and done >= frac * total:
                        marks[frac] = time.monotonic()
                time.sleep(0.2)
            elapsed = time.monotonic() - started
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    steady = 0.8 * total / max(1e-9, marks[0.9] - marks[0.1])
    return RunResult(engine, total, round(elapsed, 1), round(total / elapsed), round(steady), round(peak / 2**20))


def latency(settings: Settings, env: dict[str, str], workdir: Path, rate: float, seconds: float,
            entities: int, flavour: str) -> dict[str, Any]:
    topic = f"metricx.bench.lat.{uuid.uuid4().hex[:6]}"
    ensure_topics(settings.kafka.bootstrap, [TopicSpec(topic, 4)])
    url = fresh_database(settings, "lat", flavour)
    total = int(rate * seconds)
    try:
        env = {**env, "METRICX_DATABASE_URL": url, "METRICX_RAW_TOPIC": topic,
               "METRICX_DATA_DIR": str(workdir / f"lat-{int(rate)}-{flavour}")}
        log = workdir / f"latency-pipeline-{flavour}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "metricx.cli", "pipeline"], env=env,
                                    stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
            try:
                deadline = time.monotonic() + 60
                while "kafka partition assigned" not in log.read_text(errors="replace"):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"pipeline did not start; see {log}")
                    time.sleep(0.2)
                time.sleep(1)
                producer = Producer(settings.kafka.bootstrap, client_id="bench-latency", linger_ms=1)
                world = build_world_for_entities(7, entities)
                began = time.monotonic()
                run_bulk(producer, world, snapshots=total, seed=7, end_utc=datetime.now(UTC),
                         rate=rate, topic=topic)
                achieved = total / (time.monotonic() - began)
                deadline = time.monotonic() + 300
                while progress(url, topic) < total:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"pipeline did not catch up; see {log}")
                    time.sleep(0.2)
            finally:
                proc.terminate()
                proc.wait(20)
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT percentile_cont(ARRAY[0.5, 0.99, 1.0]) WITHIN GROUP "
                "(ORDER BY extract(epoch FROM ingested_at - produced_at)), count(*) FROM insight_snapshots"
            ).fetchone()
        assert row is not None
        p50, p99, pmax = row[0]
        return {"flavour": flavour, "rate_target": rate, "rate_achieved": round(achieved), "snapshots": total,
                "stored": int(row[1]), "p50_ms": round(p50 * 1000, 1), "p99_ms": round(p99 * 1000, 1),
                "max_ms": round(pmax * 1000, 1)}
    finally:
        drop_database(settings, url)
        delete_topics(settings.kafka.bootstrap, [topic])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--snapshots", type=int, default=1_000_000)
    ap.add_argument("--entities", type=int, default=50_000)
    ap.add_argument("--rates", default="10000,2500",
                    help="steady produce rates for the latency runs (the target, then a sustainable one)")
    ap.add_argument("--latency-seconds", type=float, default=30)
    ap.add_argument("--skip-latency", action="store_true")
    fl.add_argument(ap)
    args = ap.parse_args()

    settings = load_settings()
    flavours = fl.chosen(settings, args.flavours)
    workdir = Path(tempfile.mkdtemp(prefix="metricx-bench-"))
    topic = f"metricx.bench.raw.{uuid.uuid4().hex[:6]}"
    dl_topic = f"metricx.bench.dl.{uuid.uuid4().hex[:6]}"
    ensure_topics(settings.kafka.bootstrap, [raw_topic_spec(topic, 4), deadletter_topic_spec(dl_topic)])
    results: dict[str, Any] = {"snapshots": args.snapshots, "entities": args.entities, "flavours": flavours,
                               "cpus": os.cpu_count(), "started": datetime.now(UTC).isoformat()}
    runs: list[RunResult] = []
    latencies: list[dict[str, Any]] = []
    try:
        print(f"producing {args.snapshots:,} snapshots over {args.entities:,} entities ...", flush=True)
        t0 = time.monotonic()
        producer = Producer(settings.kafka.bootstrap, client_id="bench-load")
        world = build_world_for_entities(7, args.entities)
        run_bulk(producer, world, snapshots=args.snapshots, seed=7, end_utc=datetime.now(UTC), topic=topic)
        produce_s = time.monotonic() - t0
        results["produce"] = {"seconds": round(produce_s, 1), "per_s": round(args.snapshots / produce_s)}
        print(f"  produced in {produce_s:.1f}s ({args.snapshots / produce_s:,.0f}/s)", flush=True)

        base_env = {**os.environ, "METRICX_RAW_TOPIC": topic, "METRICX_DEADLETTER_TOPIC": dl_topic,
                    "METRICX_LOG_LEVEL": "INFO"}
        for engine, cmd in (
            ("bytewax", [sys.executable, "-m", "metricx.cli", "pipeline"]),
            ("plain", [sys.executable, "-m", "pipelines.plain"]),
        ):
            for flavour in flavours:
                url = fresh_database(settings, engine, flavour)
                env = {**base_env, "METRICX_DATABASE_URL": url, "METRICX_DATA_DIR": str(workdir / f"{engine}-{flavour}")}
                print(f"running {engine} on {fl.LABELS[flavour]} ...", flush=True)
                try:
                    r = run_engine(engine, cmd, env, url, topic, args.snapshots, workdir / f"{engine}-{flavour}.log")
                finally:
                    drop_database(settings, url)
                r.flavour = flavour
                print(f"  {r.engine} on {fl.LABELS[flavour]}: {r.per_s:,.0f} snapshots/s end to end ({r.seconds}s), "
                      f"steady {r.steady_per_s:,.0f}/s, peak RSS {r.peak_rss_mb} MB", flush=True)
                runs.append(r)
        results["runs"] = [asdict(r) for r in runs]

        if not args.skip_latency:
            for rate in (float(r) for r in args.rates.split(",")):
                for flavour in flavours:
                    print(f"latency at a steady {rate:,.0f} snapshots/s for {args.latency_seconds:.0f}s on "
                          f"{fl.LABELS[flavour]} ...", flush=True)
                    lat = latency(settings, base_env, workdir, rate, args.latency_seconds, args.entities, flavour)
                    latencies.append(lat)
                    print(f"  p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms", flush=True)
            results["latency"] = latencies
    finally:
        delete_topics(settings.kafka.bootstrap, [topic, dl_topic])

    def run(engine: str, flavour: str) -> RunResult | None:
        return next((r for r in runs if r.engine == engine and r.flavour == flavour), None)

    def fig(engine: str, attr: str) -> dict[str, float | None]:
        return {f: getattr(r, attr) if (r := run(engine, f)) else None for f in flavours}

    def ratio(attr: str) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for f in flavours:
            b, p = run("bytewax", f), run("plain", f)
            out[f] = round(getattr(b, attr) / getattr(p, attr), 3) if b and p else None
        return out

    results["ratio_bytewax_to_plain"] = ratio("per_s")
    results["ratio_steady"] = ratio("steady_per_s")
    out = settings.data_dir / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "backbone.json").write_text(json.dumps(results, indent=2))
    rows: list[tuple[str, dict[str, float | None]]] = [
        ("bytewax, snapshots/s end to end", fig("bytewax", "per_s")),
        ("bytewax, snapshots/s steady", fig("bytewax", "steady_per_s")),
        ("plain loop, snapshots/s end to end", fig("plain", "per_s")),
        ("plain loop, snapshots/s steady", fig("plain", "steady_per_s")),
        ("bytewax peak RSS, MB", fig("bytewax", "peak_rss_mb")),
    ]
    print("\n== metricx backbone benchmark ==")
    print(f"  load: {args.snapshots:,} snapshots, {args.entities:,} entities, {os.cpu_count()} CPUs")
    print(fl.side_by_side("figure", rows, flavours))
    print(fl.side_by_side("ratio bytewax / plain (target >= 0.7)",
                          [("end to end", results["ratio_bytewax_to_plain"]), ("steady", results["ratio_steady"])],
                          flavours, fmt=lambda v: f"{v:.3f}"))
    lat_rows: list[tuple[str, dict[str, float | None]]] = []
    for rate in sorted({lat["rate_target"] for lat in latencies}, reverse=True):
        at = {str(lat["flavour"]): lat for lat in latencies if lat["rate_target"] == rate}
        lat_rows.extend((f"produce->committed at {rate:,.0f}/s, {q[:3]} ms",
                         {f: at[f][q] if f in at else None for f in flavours}) for q in ("p50_ms", "p99_ms"))
    if lat_rows:
        print(fl.side_by_side("latency (target p99 <= 1000 ms at 10,000/s)", lat_rows, flavours,
                              fmt=lambda v: f"{v:,.1f}"))
    print(f"  details: {out / 'backbone.json'}, logs in {workdir}")


if __name__ == "__main__":
    threading.excepthook = lambda a: None  # quiet librdkafka stats threads at exit
    main()
