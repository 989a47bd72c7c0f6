"""The simulated poller process: publishes the simulated platform's snapshots to Kafka.

It goes through ``adapters.kafka.Producer`` like every real poller, so the delivery
guarantees (idempotent producer, delivery callbacks, :class:`DeliveryError` on flush)
are exercised by the demo and the benchmarks too.  Two modes:

* :func:`run_live` - the live demo: polls every ad at "now" every few seconds; the
  intraday curve is a function of real local time of day (optionally compressed by
  ``speedup``), so a dashboard visibly moves between polls.
* :func:`run_bulk` - a fixed number of snapshots as fast as possible (or at a steady
  ``rate``), all captured in the past, for throughput and latency benchmarks.

The CLI that calls these is wired elsewhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from adapters.kafka import Producer, flush_until_delivered, publish_snapshots
from domain.sim.generator import (
    DEFAULT_DUPLICATE_RATE,
    DEFAULT_INTERVAL,
    DEFAULT_OUT_OF_ORDER_RATE,
    DEFAULT_RESTATEMENT_RATE,
    Simulation,
    bulk_stream_encoded,
    utc_ms,
)
from domain.sim.world import World
from ground.metrics import PUBLISHED
from schemas.insight import RAW_TOPIC

log = logging.getLogger(__name__)

_ONE_MS = timedelta(milliseconds=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


def run_live(
    producer: Producer,
    world: World,
    *,
    interval_s: float,
    seed: int,
    stop: threading.Event | None = None,
    clock: Callable[[], datetime] = utc_now,
    speedup: float = 1.0,
    topic: str = RAW_TOPIC,
    restatement_rate: float = DEFAULT_RESTATEMENT_RATE,
    duplicate_rate: float = DEFAULT_DUPLICATE_RATE,
    out_of_order_rate: float = DEFAULT_OUT_OF_ORDER_RATE,
    max_polls: int | None = None,
) -> int:
    """Poll every ad at ``clock()`` every ``interval_s`` seconds until ``stop`` is set
    (or ``max_polls`` polls); return the number of messages published.

    Each poll is flushed before the next starts; while the broker is away the flush
    waits (and says so), and a message it refused for good surfaces as a
    :class:`adapters.kafka.DeliveryError` from here instead of silent loss.  Poll
    instants are made strictly increasing even if ``clock`` stalls or steps back,
    because ``captured_at`` must grow per series.
    """
    if interval_s < 0:
        raise ValueError("interval_s must be >= 0")
    stop = stop if stop is not None else threading.Event()
    sim = Simulation(
        world,
        seed=seed,
        restatement_rate=restatement_rate,
        duplicate_rate=duplicate_rate,
        out_of_order_rate=out_of_order_rate,
        speedup=speedup,
    )
    total = polls = 0
    while not stop.is_set():
        began = time.monotonic()
        now = utc_ms(clock())
        last = sim.last_poll
        if last is not None and now <= last:
            now = last + _ONE_MS
        n = publish_snapshots(producer, sim.poll_snapshots(now), topic)
        # A broker restart only delays the poll: the next one waits until this one is in.
        flush_until_delivered(producer, "simulated poll")
        PUBLISHED.labels("sim").inc(n)
        polls += 1
        total += n
        duration_ms = (time.monotonic() - began) * 1000.0
        log.info(
            "sim poll %d: %d snapshots captured_at=%s in %.0f ms",
            polls,
            n,
            now.isoformat(),
            duration_ms,
            extra={
                "event": "sim_poll",
                "poll": polls,
                "snapshots": n,
                "captured_at": now.isoformat(),
                "duration_ms": round(duration_ms, 1),
            },
        )
        if max_polls is not None and polls >= max_polls:
            break
        stop.wait(max(0.0, interval_s - (time.monotonic() - began)))
    return total


def run_bulk(
    producer: Producer,
    world: World,
    *,
    snapshots: int,
    seed: int,
    end_utc: datetime,
    rate: float | None = None,
    topic: str = RAW_TOPIC,
    interval: timedelta = DEFAULT_INTERVAL,
    restatement_rate: float = DEFAULT_RESTATEMENT_RATE,
    duplicate_rate: float = DEFAULT_DUPLICATE_RATE,
    out_of_order_rate: float = DEFAULT_OUT_OF_ORDER_RATE,
    flush_timeout: float = 300.0,
    clock: Callable[[], datetime] = utc_now,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Publish exactly ``snapshots`` messages - polls every ``interval`` scheduled to end
    at ``end_utc``, nothing captured later - then flush; return the count.

    ``rate`` (messages/s) paces sends in small batches against a monotonic schedule
    (no drift, no bursts larger than ~5 ms of traffic), for latency benchmarks; without
    it messages go out as fast as the producer takes them.  The messages are exactly
    ``generator.bulk_stream(...)`` with the same arguments, so callers can compute the
    expected outcome from that.  ``monotonic`` and ``sleep`` are the pacing clock (tests
    pass a virtual one).
    """
    if end_utc > clock() + _ONE_MS:
        raise ValueError(f"end_utc {end_utc.isoformat()} is in the future")
    if rate is not None and not rate > 0:
        raise ValueError("rate must be > 0")
    pairs = bulk_stream_encoded(
        world,
        snapshots=snapshots,
        seed=seed,
        end_utc=end_utc,
        interval=interval,
        restatement_rate=restatement_rate,
        duplicate_rate=duplicate_rate,
        out_of_order_rate=out_of_order_rate,
    )
    send = producer.send
    n = 0
    began = monotonic()
    if rate is None:
        for key, value in pairs:
            send(topic, value, key)
            n += 1
    else:
        batch = max(1, min(1000, int(rate / 200)))  # ~200 batches per second
        for key, value in pairs:
            send(topic, value, key)
            n += 1
            if n % batch == 0:
                delay = began + n / rate - monotonic()
                if delay > 0:
                    sleep(delay)
    producer.flush(flush_timeout)
    elapsed = monotonic() - began
    log.info(
        "sim bulk: %d snapshots in %.2f s (%.0f/s)",
        n,
        elapsed,
        n / elapsed if elapsed else 0.0,
        extra={"event": "sim_bulk", "snapshots": n, "duration_s": round(elapsed, 3)},
    )
    return n
