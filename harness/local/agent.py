"""The fault agent: one long-lived Ray driver per stack, inside the head's namespaces, that runs the harness's
driver snippets (kill an actor, read the proxies' routing) in milliseconds instead of starting a driver each
time (seconds of CPU on the machine under test, inside the window being judged).

    python -m harness.local.agent SOCKET GCS_ADDRESS NODE_IP     # started by LocalCluster (harness/local/agent_client.py)

It attaches to the cluster once (``ray.init``), then listens on a Unix socket (a path: the head's network
namespace does not matter) that appears only once it is attached, so the socket's presence means ready. Each
connection carries one JSON request line and gets one JSON answer line:

    {"op": "run", "snippet": "...", "timeout_s": 60}  ->  {"returncode": 0, "stdout": "...", "stderr": "",
                                                           "started_wall": ..., "finished_wall": ...}
    {"op": "stats"}                                   ->  {"pid": ..., "cpu_s": ..., "rss_mb": ..., "commands": N}

A snippet runs as a one-shot driver's would (``ray`` is imported and attached; its ``print`` is its stdout;
``SystemExit`` sets the exit code). Requests are served on threads, each with its own output, so a slow one
does not hold up the next. The agent dies with the head (its PID namespace); the client starts it again.
"""

from __future__ import annotations

import json
import os
import resource
import socketserver
import sys
import threading
import time
import traceback


class _State:
    commands = 0
    lock = threading.Lock()


def run_snippet(snippet: str, ray_module) -> dict:
    """Run one snippet; what a one-shot driver's process would have printed and exited with."""
    out: list[str] = []

    def _print(*args, sep=" ", end="\n", file=None, flush=False):  # print's signature; file and flush unused
        out.append(sep.join(str(a) for a in args) + end)

    started = time.time()
    code, err = 0, ""
    try:
        exec(compile(snippet, "<snippet>", "exec"), {"ray": ray_module, "print": _print, "__name__": "__snippet__"})  # noqa: S102
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            err = str(exc.code)
    except BaseException:  # noqa: BLE001 - a snippet's failure is its exit code and traceback, as in a process
        code, err = 1, traceback.format_exc()
    with _State.lock:
        _State.commands += 1
    return {"returncode": code, "stdout": "".join(out), "stderr": err, "started_wall": started,
            "finished_wall": time.time()}


def stats() -> dict:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"pid": os.getpid(), "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "rss_mb": round(usage.ru_maxrss / 1024, 1), "commands": _State.commands}


def serve(socket_path: str, ray_module) -> None:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            try:
                request = json.loads(self.rfile.readline() or b"{}")
                if request.get("op") == "run":
                    answer = run_snippet(str(request["snippet"]), ray_module)
                elif request.get("op") == "stats":
                    answer = stats()
                else:
                    answer = {"error": f"unknown op {request.get('op')!r}"}
            except (ValueError, KeyError) as exc:
                answer = {"error": f"bad request: {type(exc).__name__}: {exc}"}
            self.wfile.write((json.dumps(answer) + "\n").encode())

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    pending = f"{socket_path}.{os.getpid()}.starting"
    server = Server(pending, Handler)
    os.replace(pending, socket_path)  # the socket appears, ready, in one step
    server.serve_forever()


def main(argv: list[str]) -> int:
    socket_path, gcs_address, node_ip = argv
    import ray

    ray.init(address=gcs_address, _node_ip_address=node_ip, logging_level="ERROR", log_to_driver=False)
    serve(socket_path, ray)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
