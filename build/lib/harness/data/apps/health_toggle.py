"""An app whose health check can be made to fail on demand, for the replica health-check scenario.

``GET <route>/fail`` makes the replica that answers fail every health check from then on (it answers with
its replica id and PID); any other path answers with the PID. ``honour_failures=False`` (the control)
ignores the toggle, so Serve never sees the replica as unhealthy.
"""

import os

from ray import serve
from starlette.requests import Request


@serve.deployment
class HealthToggle:
    def __init__(self, honour_failures: bool = True):
        self.honour_failures = honour_failures
        self.failing = False

    async def __call__(self, request: Request):
        if request.url.path.rstrip("/").endswith("/fail"):
            self.failing = True
            return {"replica_id": serve.get_replica_context().replica_id.unique_id, "pid": os.getpid()}
        return os.getpid()

    def check_health(self):
        if self.failing and self.honour_failures:
            raise RuntimeError("health check toggled to fail by the harness")


def build(args: dict) -> serve.Application:
    return HealthToggle.bind(honour_failures=bool(args.get("honour_failures", True)))


app = HealthToggle.bind()
