"""Hold a TCP port and never answer on it: the squatter of the proxy_failure control (scenarios/test_controls.py).

    python squat_port.py HOST PORT BOUND_FILE [TIMEOUT_S]

Started in a node's network namespace while that node's proxy still listens on PORT, it binds HOST:PORT the
moment the port is free (the proxy was killed), listens and never accepts, so the proxy the controller starts
next fails to bind ("Failed to bind to address") and never becomes HEALTHY. SO_REUSEADDR lets it bind past the
dead proxy's TIME_WAIT connections; it sets no SO_REUSEPORT, so no proxy can share the port with it. Once it
listens it writes the CLOCK_MONOTONIC time of the bind to BOUND_FILE, then holds the port until it is killed.
It gives up (exit 1) if the port is not free within TIMEOUT_S (default 300).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import time
from pathlib import Path

from harness.waiting import wait_until


def main(argv: list[str]) -> int:
    host, port, bound_file = argv[0], int(argv[1]), Path(argv[2])
    timeout_s = float(argv[3]) if len(argv) > 3 else 300.0
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def bound() -> bool:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False  # the proxy still listens
            raise
        return True

    wait_until(f"{host}:{port} to be free", bound, timeout_s=timeout_s, interval_s=0.005)
    sock.listen(1)
    at = time.monotonic()
    tmp = bound_file.with_name(bound_file.name + ".tmp")
    tmp.write_text(f"{at}\n")
    os.replace(tmp, bound_file)
    print(f"bound {host}:{port} at {at:.3f} (pid {os.getpid()})", file=sys.stderr, flush=True)
    while True:
        signal.pause()  # hold the port and answer nothing, until killed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
