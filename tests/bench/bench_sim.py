"""Generation-speed measurement of the simulator (no Kafka involved).

Why: the simulator feeds throughput benchmarks of the pipeline, so it must be clearly
faster than what it feeds; this says by how much on the machine at hand.
Run with ``python -m tests.bench.bench_sim [n_ads] [snapshots]``.  Both wall and CPU
time are reported, because on a shared machine wall time also measures the neighbours.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from domain.sim.generator import bulk_stream, bulk_stream_encoded
from domain.sim.world import build_world_for_entities


@dataclass(frozen=True)
class GenSpeed:
    mode: str
    snapshots: int
    wall_s: float
    cpu_s: float

    @property
    def per_s_wall(self) -> float:
        return self.snapshots / self.wall_s if self.wall_s else float("inf")

    @property
    def per_s_cpu(self) -> float:
        return self.snapshots / self.cpu_s if self.cpu_s else float("inf")


def measure(n_ads: int = 50_000, snapshots: int = 1_000_000, seed: int = 7) -> list[GenSpeed]:
    """Time generating ``snapshots`` messages over ``n_ads`` ads, encoded and as objects."""
    world = build_world_for_entities(seed, n_ads)
    end = datetime(2024, 6, 1, tzinfo=UTC)
    out = []
    for mode in ("encoded", "snapshots"):
        w0, c0 = time.perf_counter(), time.process_time()
        if mode == "encoded":
            deque(bulk_stream_encoded(world, snapshots=snapshots, seed=seed, end_utc=end), maxlen=0)
        else:
            deque(bulk_stream(world, snapshots=snapshots, seed=seed, end_utc=end), maxlen=0)
        out.append(GenSpeed(mode, snapshots, time.perf_counter() - w0, time.process_time() - c0))
    return out


if __name__ == "__main__":  # pragma: no cover - manual tool
    args = [int(a) for a in sys.argv[1:3]]
    for r in measure(*args):
        print(
            f"{r.mode:9s} {r.snapshots} snapshots: wall {r.wall_s:.2f}s ({r.per_s_wall:,.0f}/s), "
            f"cpu {r.cpu_s:.2f}s ({r.per_s_cpu:,.0f}/s)"
        )
