"""Recovery figures, printed (never asserted): how long the system takes to be correct
again after each fault of the fault suite (``tests/faults``): the Kafka broker and
PostgreSQL restarted, Redis stopped, the pipeline, the notifier and the server killed
-9, each under a steady simulated load.

The suite records them in ``.data/bench/recovery.json``; this prints that file.
``--run`` runs the suite first, with Redis down for ``--redis-outage`` seconds (30 by
default, as in the hardening brief; the test suite itself uses 10).

Run: ``python -m tests.bench.bench_recovery [--run] [--redis-outage 30]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from ground.settings import REPO_ROOT, load_settings

RECOVERY_FILE = load_settings().data_dir / "bench" / "recovery.json"

WHAT = {
    "kafka_restart": ("Kafka broker stopped, started", "the pipeline committed everything published before"),
    "postgres_restart": ("PostgreSQL stopped, started", "the pipeline committed everything published before"),
    "redis_outage": ("Redis stopped, started (empty)", "the dashboard stream got its reset and live updates"),
    "pipeline_kill9": ("pipeline kill -9, restarted", "it committed everything published before the restart"),
    "notifier_kill9": ("notifier kill -9, restarted", "an alert queued after the restart reached Slack"),
    "server_kill9": ("server kill -9, restarted", "the SSE client resumed with Last-Event-ID"),
}


def run_suite(redis_outage_s: float) -> int:
    env = {**os.environ, "METRICX_FAULT_REDIS_OUTAGE_S": str(redis_outage_s)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "faults", "tests/faults"], cwd=REPO_ROOT,
                          env=env).returncode


def report(data: dict[str, Any]) -> str:
    lines = [f"Recovery after faults (tests/faults, measured {data['measured_at']}; load "
             f"{data['load_snapshots_per_s']:.0f} snapshots/s, Redis down {data['redis_outage_s']:.0f} s)",
             f"  {'fault':<32} {'down':>7} {'recovered':>10} {'after back':>11}  recovered = when"]
    for name, fig in data["faults"].items():
        label, when = WHAT.get(name, (name, ""))
        extra = ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.1f} s" for k, v in fig.items()
                          if k not in ("down_s", "recovered_s", "after_back_s"))
        lines.append(f"  {label:<32} {fig['down_s']:>6.1f}s {fig['recovered_s']:>9.1f}s {fig['after_back_s']:>10.1f}s"
                     f"  {when}{f' ({extra})' if extra else ''}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="store_true", help="run the fault suite first")
    parser.add_argument("--redis-outage", type=float, default=30.0, help="seconds Redis stays down (with --run)")
    args = parser.parse_args()
    if args.run:
        code = run_suite(args.redis_outage)
        if code != 0:
            print(f"the fault suite failed (exit {code}); figures not refreshed", file=sys.stderr)
            return code
    if not RECOVERY_FILE.exists():
        print(f"no recovery figures yet ({RECOVERY_FILE}): run `make test-faults` or this module with --run")
        return 1
    print(report(json.loads(RECOVERY_FILE.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
