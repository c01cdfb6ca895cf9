"""Plain locust, as a user would write it, for benchmarks/locust_compare.py: a ``FastHttpUser`` at a constant rate
with one ``request`` listener that records every request. Runs headless in this process (locust monkey-patches
it with gevent: it is always its own process) and prints one JSON line with what it saw.

    python benchmarks/plain_locust.py URL RATE DURATION_S
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from locust import FastHttpUser, constant_throughput, task  # noqa: E402
from locust.env import Environment  # noqa: E402

PER_USER_RATE = 50.0  # requests per second per simulated user


def main() -> int:
    url, rate, duration_s = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    users = max(1, math.ceil(rate / PER_USER_RATE))

    class Client(FastHttpUser):
        host = url.rstrip("/")  # the task asks for "/"
        wait_time = constant_throughput(rate / users)

        @task
        def get(self) -> None:
            self.client.get("/")

    records: list[tuple[float, float, bool]] = []

    def on_request(request_type, name, response_time, response_length, exception=None, **kwargs) -> None:
        records.append((time.monotonic(), response_time / 1000.0, exception is None))

    env = Environment(user_classes=[Client])
    env.events.request.add_listener(on_request)
    runner = env.create_local_runner()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    runner.start(users, spawn_rate=users)  # every user at once
    gevent.sleep(duration_s)  # the benchmark's run length (locust's own clock: gevent)
    runner.quit()
    elapsed = time.monotonic() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    window = (started + 1.0, started + duration_s)  # past the spawn, until the run's end
    steady = [r for r in records if window[0] <= r[0] < window[1]]
    print(json.dumps({"users": users, "recorded": len(records), "ok": sum(r[2] for r in records),
                      "stats_total": env.stats.total.num_requests,
                      "achieved": len(steady) / (window[1] - window[0]),
                      "cpu_share": cpu / elapsed, "elapsed_s": elapsed}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
