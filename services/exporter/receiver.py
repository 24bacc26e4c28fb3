"""The receive loop: ZeroMQ messages into the aggregator, idle sweeps, a heartbeat."""

import time

BATCH = 100           # messages aggregated per lock hold (keeps scrapes waiting briefly)
SWEEP_SECONDS = 1.0   # how often idle sessions are looked for


def run(puller, aggregator, stop, heartbeat):
    """Receive until `stop` (a threading.Event) is set; `heartbeat[0]` = last loop time."""
    next_sweep = 0.0
    while not stop.is_set():
        msg = puller.recv(timeout_ms=200)
        now = time.monotonic()
        if msg is not None:
            batch = [msg]
            while len(batch) < BATCH:
                more = puller.recv_nowait()
                if more is None:
                    break
                batch.append(more)
            with aggregator.lock:
                for m in batch:
                    try:
                        aggregator.handle(m, now)
                    except Exception as e:   # a bug must not stop the stream: count, log once
                        aggregator.pipeline.bad("internal_error", repr(e), exc_info=True)
        if now >= next_sweep:
            with aggregator.lock:
                aggregator.expire(now)
                aggregator.history.maybe_snapshot(now)
            next_sweep = now + SWEEP_SECONDS
        heartbeat[0] = now
