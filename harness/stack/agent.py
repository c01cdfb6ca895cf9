"""The fault agent: one long-lived Ray driver per stack, in the head (the local head's namespaces, or the head pod),
that runs the harness's driver snippets (kill an actor, read the proxies' routing) in milliseconds instead of
starting a driver each time (seconds of CPU on the machine under test, inside the window being judged).

    python -m harness.stack.agent SOCKET GCS_ADDRESS NODE_IP          # local: LocalCluster (harness/local/agent_client.py)
    python -c "<this file>" tcp:127.0.0.1:PORT auto -                 # in a head pod: harness/kube/agent.py

This file imports only the standard library and ``ray``: on Kubernetes its source is sent to the head pod as it
is (the Ray image has no harness). It attaches to the cluster once (``ray.init``), then listens: on a Unix socket
(a path) that appears only once it is attached, or on a TCP address (``tcp:HOST:PORT``; bound only once attached)
in the pod's loopback, reached through a port-forward. Either way, answering means ready. Each connection carries
one JSON request line and gets one JSON answer line:

    {"op": "run", "snippet": "...", "timeout_s": 60}  ->  {"returncode": 0, "stdout": "...", "stderr": "",
                                                           "started_wall": ..., "finished_wall": ...}
    {"op": "stats"}                                   ->  {"pid": ..., "cpu_s": ..., "rss_mb": ..., "commands": N,
                                                           "now_wall": ...}

A snippet runs as a one-shot driver's would (``ray`` is imported and attached; what it writes to stdout and
stderr is its output, sent as it is written, ``{"stream": "stdout", "text": ...}`` lines before the answer, so a
caller that gives up keeps what was printed; ``SystemExit`` sets the exit code). Requests are served on threads,
each with its own output, so a slow one does not hold up the next. The agent dies with the head (its PID
namespace, or its pod); the client starts it again.
"""

from __future__ import annotations

import io
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


_local = threading.local()  # the current request's output sink, per thread


class _Routed(io.TextIOBase):
    """sys.stdout / sys.stderr: what a snippet writes goes to its own request (as a driver process's output
    would), everything else (Ray's own threads) to the agent's log."""

    def __init__(self, real, name: str):
        self.real, self.name = real, name

    def write(self, text: str) -> int:
        sink = getattr(_local, "sink", None)
        if sink is None:
            return self.real.write(text)
        sink(self.name, text)
        return len(text)

    def flush(self) -> None:
        if getattr(_local, "sink", None) is None:
            self.real.flush()


def run_snippet(snippet: str, ray_module, sink=None) -> dict:
    """Run one snippet; what a one-shot driver's process would have printed and exited with. ``sink(stream,
    text)`` receives its output as it is written (the answer holds it all too)."""
    out = {"stdout": [], "stderr": []}

    def collect(stream: str, text: str) -> None:
        out[stream].append(text)
        if sink is not None:
            sink(stream, text)

    started = time.time()
    code = 0
    _local.sink = collect
    try:
        exec(compile(snippet, "<snippet>", "exec"), {"ray": ray_module, "__name__": "__snippet__"})  # noqa: S102
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            collect("stderr", str(exc.code) + "\n")
    except BaseException:  # noqa: BLE001 - a snippet's failure is its exit code and traceback, as in a process
        code = 1
        collect("stderr", traceback.format_exc())
    finally:
        _local.sink = None
    with _State.lock:
        _State.commands += 1
    return {"returncode": code, "stdout": "".join(out["stdout"]), "stderr": "".join(out["stderr"]),
            "started_wall": started, "finished_wall": time.time()}


def stats() -> dict:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"pid": os.getpid(), "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "rss_mb": round(usage.ru_maxrss / 1024, 1), "commands": _State.commands, "now_wall": time.time()}


def serve(socket_path: str, ray_module) -> None:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            try:
                request = json.loads(self.rfile.readline() or b"{}")
                if request.get("op") == "run":
                    def stream(name: str, text: str) -> None:  # output as it is written: a caller that times out keeps it
                        self.wfile.write((json.dumps({"stream": name, "text": text}) + "\n").encode())
                        self.wfile.flush()

                    answer = run_snippet(str(request["snippet"]), ray_module, sink=stream)
                elif request.get("op") == "stats":
                    answer = stats()
                else:
                    answer = {"error": f"unknown op {request.get('op')!r}"}
            except (ValueError, KeyError) as exc:
                answer = {"error": f"bad request: {type(exc).__name__}: {exc}"}
            self.wfile.write((json.dumps(answer) + "\n").encode())

    if socket_path.startswith("tcp:"):
        host, _, port = socket_path[len("tcp:"):].rpartition(":")

        class TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
            daemon_threads = True
            allow_reuse_address = True

        TcpServer((host, int(port)), Handler).serve_forever()  # bound once attached: a refused connect means not ready
        return

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    pending = f"{socket_path}.{os.getpid()}.starting"
    server = Server(pending, Handler)
    os.replace(pending, socket_path)  # the socket appears, ready, in one step
    server.serve_forever()


def route_output() -> None:
    """Each request's output to its own caller (see _Routed)."""
    sys.stdout = _Routed(sys.stdout, "stdout")
    sys.stderr = _Routed(sys.stderr, "stderr")


def main(argv: list[str]) -> int:
    """``SOCKET_OR_TCP GCS_ADDRESS NODE_IP``: ``auto`` finds the cluster as ``ray.init`` does in a Ray pod; a
    NODE_IP of ``-`` lets Ray pick it (in a pod: its own IP)."""
    socket_path, gcs_address, node_ip = argv
    route_output()
    import ray

    extra = {} if node_ip == "-" else {"_node_ip_address": node_ip}
    ray.init(address=gcs_address, logging_level="ERROR", log_to_driver=False, **extra)
    serve(socket_path, ray)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
