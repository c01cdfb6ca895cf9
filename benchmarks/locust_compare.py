"""The harness's traffic generator against plain locust, side by side in one run against one loopback server.

    .venv/bin/python benchmarks/locust_compare.py [--quick]

Both are single-threaded gevent processes on locust's ``FastHttpSession`` (so each uses one core at most), both
record every request through locust's ``request`` event. The difference is what the harness adds: an open-loop
schedule (request i is due at start + i / rate whatever the answers do), a lag per request, a history line per
request. Plain locust is a ``FastHttpUser`` with ``constant_throughput`` (50 req/s per user) and one listener
(benchmarks/plain_locust.py). Per rate step it prints, for each: requests recorded, the achieved rate, its CPU;
for the harness also the p99 send lag. "Sustained" is every request recorded and the achieved rate within 1% of
the target; the harness is also held to its own stricter rule (p99 lag <= 10 ms), shown apart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from traffic_bench import run_at  # noqa: E402  the harness side, exactly as the traffic benchmark runs it

from harness.testing.loopback import LoopbackServer  # noqa: E402

HERE = Path(__file__).resolve().parent


def plain_locust(url: str, rate: float, duration_s: float) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "plain_locust.py"), url, str(rate), str(duration_s)],
                         capture_output=True, text=True, timeout=duration_s + 60)
    if out.returncode != 0:
        raise RuntimeError(f"plain locust failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter steps")
    args = parser.parse_args()
    duration_s = 3.0 if args.quick else 6.0
    rates = [500, 1000, 2000, 3000, 4000, 5000, 6000, 8000]
    best = {"harness (strict lag)": 0.0, "harness (rate only)": 0.0, "plain locust": 0.0}
    stopped: set[str] = set()
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}; {duration_s:g} s per step")
    with tempfile.TemporaryDirectory(prefix="locust-compare-") as tmp, LoopbackServer() as server:
        for rate in rates:
            ours = run_at(server, rate, duration_s, Path(tmp))
            theirs = plain_locust(server.url, rate, duration_s)
            theirs_ok = theirs["recorded"] == theirs["stats_total"] and theirs["achieved"] >= 0.99 * rate
            print(f"  {rate:>5} req/s  harness: recorded {ours.recorded}/{ours.planned}, achieved {ours.achieved:.0f}/s, "
                  f"lag p99 {ours.lag_p99_s * 1000:.1f} ms, CPU {ours.cpu_share:.0%}  |  plain locust "
                  f"({theirs['users']} users): recorded {theirs['recorded']}, achieved {theirs['achieved']:.0f}/s, "
                  f"CPU {theirs['cpu_share']:.0%}", flush=True)
            for name, ok in (("harness (strict lag)", ours.sustained), ("harness (rate only)", ours.rate_held),
                             ("plain locust", theirs_ok)):
                if name in stopped:
                    continue
                if ok:
                    best[name] = rate
                else:
                    stopped.add(name)  # the highest rate counts only while every lower step held
            if len(stopped) == len(best):
                break
    print("\nhighest rate sustained (every request recorded, achieved within 1%), same server, same run:")
    for name, rate in best.items():
        print(f"  {name:<22} {rate:g} req/s")
    if best["plain locust"]:
        print(f"  ratio harness (rate only) / plain locust: {best['harness (rate only)'] / best['plain locust']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
