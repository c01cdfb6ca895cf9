"""A composed Serve application, as a user might ship one: a FastAPI ingress (``Recommender``) that calls a
model-like deployment (``Ranker``) through a handle and answers JSON. ``Ranker`` has its own ``check_health``;
``GET /admin/fail-ranker-health`` makes the Ranker replica that serves the call fail it from then on (the
health-check scenario's toggle, ``[app.health]`` in stack.toml).

    POST /recommend {"user": "ada", "k": 3}  ->  {"user": "ada", "items": [...], "ranker_pid": ..., ...}
"""

import hashlib
import os

from fastapi import FastAPI
from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle

CATALOG = ("atlas", "beacon", "cinder", "delta", "ember", "fjord", "garnet", "harbor", "iris", "juniper")

api = FastAPI(title="recommender")


class Query(BaseModel):
    user: str
    k: int = 3


def _replica_id() -> str:
    return serve.get_replica_context().replica_id.unique_id


@serve.deployment
class Ranker:
    """Scores the catalogue for a user (a stand-in for a model: deterministic, cheap)."""

    def __init__(self) -> None:
        self.failing = False

    def rank(self, user: str, k: int) -> dict:
        def score(item: str) -> str:
            return hashlib.sha256(f"{user}/{item}".encode()).hexdigest()

        return {"items": sorted(CATALOG, key=score)[:k], "ranker_pid": os.getpid(), "ranker_replica": _replica_id()}

    def fail_health(self) -> dict:
        self.failing = True
        return {"replica_id": _replica_id(), "pid": os.getpid()}

    def check_health(self) -> None:
        if self.failing:
            raise RuntimeError("Ranker: health check toggled to fail")


@serve.deployment
@serve.ingress(api)
class Recommender:
    def __init__(self, ranker: DeploymentHandle) -> None:
        self.ranker = ranker

    @api.get("/")
    def index(self) -> dict:
        return {"service": "recommender", "ingress_pid": os.getpid()}

    @api.post("/recommend")
    async def recommend(self, query: Query) -> dict:
        ranked = await self.ranker.rank.remote(query.user, query.k)
        return {"user": query.user, **ranked, "ingress_pid": os.getpid()}

    @api.get("/admin/fail-ranker-health")
    async def fail_ranker_health(self) -> dict:
        return await self.ranker.fail_health.remote()


app = Recommender.bind(Ranker.bind())
