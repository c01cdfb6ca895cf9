"""The kind backend's whole bring-up and its status, against an in-memory API (``FakeApi``), a fake kind/helm
runner, and a fake Ray head on loopback that answers the Serve REST API and State API as Ray does; every
port-forward stream is bridged to that head for real: the phases run in order, node names map to pods by IP,
endpoints and proxy URLs are the loopback port-forwards, down deletes the cluster."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_kube_commands import NS, RUN, FakeRunner, fake_api, kind_cluster, pod

from harness.kube.api import DEPLOYMENTS, PODS, RAYSERVICES
from harness.kube.forward import pump_bytes
from harness.testing.kubefake import FakeApi

# up() validates the objects offline first
pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")

HEAD_IP, W1_IP, W2_IP = "10.244.1.5", "10.244.2.5", "10.244.3.5"


def serve_state() -> dict:
    replicas = [{"replica_id": f"r{i}", "state": "RUNNING", "pid": 100 + i, "actor_id": f"a{i}",
                 "node_ip": (W1_IP, W2_IP, HEAD_IP)[i % 3]} for i in range(6)]
    health = [{"replica_id": f"h{i}", "state": "RUNNING", "pid": 200 + i, "actor_id": f"ha{i}",
               "node_ip": (W1_IP, W2_IP)[i]} for i in range(2)]
    return {
        "controller_info": {"actor_id": "ctrl", "node_ip": HEAD_IP},
        "proxies": {ip: {"node_ip": ip, "status": "HEALTHY", "actor_id": f"proxy-{ip}"} for ip in (HEAD_IP, W1_IP, W2_IP)},
        "applications": {
            "app": {"status": "RUNNING", "route_prefix": "/", "deployments": {"SleepyPid": {"replicas": replicas}}},
            "health": {"status": "RUNNING", "route_prefix": "/health",
                       "deployments": {"HealthToggle": {"replicas": health}}},
        },
    }


def state_api(path: str) -> list[dict]:
    if path.startswith("/api/v0/nodes"):
        return [{"node_id": f"node-{ip}", "node_ip": ip, "state": "ALIVE", "start_time_ms": 1}
                for ip in (HEAD_IP, W1_IP, W2_IP)]
    return [{"actor_id": "ctrl", "class_name": "ServeController", "name": "SERVE_CONTROLLER_ACTOR", "state": "ALIVE",
             "pid": 42, "node_id": f"node-{HEAD_IP}"}]


class FakeHead(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/api/serve/applications"):
            body = serve_state()
        elif self.path.startswith("/api/v0/"):
            body = {"data": {"result": {"result": state_api(self.path)}}}
        else:
            body = 4242  # a proxy answering with its replica's PID
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_head() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHead)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


@pytest.fixture
def settings(tmp_path):
    from harness.kube.settings import load_settings

    return load_settings(overrides={"kube": {"state_dir": str(tmp_path / "state")},
                                    "kind": {"reach": "port-forward"},  # the fake pods are streams, not IPs
                                    "timeouts": {"operator_ready_s": 2.0, "redis_ready_s": 2.0,
                                                 "rayservice_ready_s": 2.0, "app_healthy_s": 5.0}})


def bridge_to(port: int) -> Callable[[socket.socket], None]:
    """A pod's port that is really the fake head's: bytes both ways."""
    def serve(sock: socket.socket) -> None:
        with sock, socket.create_connection(("127.0.0.1", port)) as upstream:
            pump_bytes(sock, upstream, lambda: False)
    return serve


@pytest.fixture
def runner() -> FakeRunner:
    r = FakeRunner()
    r.on(("kind", "get", "clusters"), (0, "", ""))
    r.on(("ip", "-j", "-4", "route", "show"), (0, "[]", ""))
    r.on(("kind", "get", "nodes"), (0, f"serve-chaos-{RUN}-control-plane\nserve-chaos-{RUN}-worker\n", ""))
    return r


@pytest.fixture
def api(fake_head) -> FakeApi:
    a = fake_api([pod("rs-head-x1", "head", HEAD_IP), pod("rs-workers-a", "worker", W1_IP),
                  pod("rs-workers-b", "worker", W2_IP, created="2026-11-25T10:00:01Z")])
    a.put(DEPLOYMENTS, {"metadata": {"name": "kuberay-operator"}, "status": {"availableReplicas": 1}}, "ray-system")
    a.put(DEPLOYMENTS, {"metadata": {"name": "redis"}, "status": {"availableReplicas": 1}}, NS)
    a.objects[("rayservices", NS, "serve-chaos")]["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    for name in ("rs-head-x1", "rs-workers-a", "rs-workers-b"):
        for port in (8000, 8265):
            a.port_servers[(name, port)] = bridge_to(fake_head)
    return a


def test_up_runs_every_phase_in_order_and_down_deletes_the_cluster(settings, runner, api, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda tool: f"/usr/bin/{tool}")
    cluster = kind_cluster(settings, runner, api)
    cluster.use_agent = False  # the agent's phase: tests/test_kube_agent.py (a real agent behind the port)
    report = cluster.up()
    assert [p.name for p in report.phases] == ["kind cluster", "images", "kuberay operator", "namespace", "objects",
                                              "redis", "rayservice", "relays", "app healthy"]
    order = [next(i for i, (argv, _) in enumerate(runner.calls) if all(w in argv for w in words))
             for words in (("kind", "create"), ("kind", "load"), ("helm", "upgrade"))]
    assert order == sorted(order)
    verbs = [c.verb for c in api.calls if c.verb in ("create", "apply", "patch")]
    assert verbs[0] == "create" and verbs[-1] == "patch" and set(verbs[1:-1]) == {"apply"}
    assert api.objects[("namespaces", None, NS)]["metadata"]["annotations"]["serve-chaos/state"] == "up"
    assert (cluster.run_dir / "state").read_text() == "up"
    assert {c.name for c in api.calls_of("open_port")} == {"rs-head-x1", "rs-workers-a", "rs-workers-b"}

    status = cluster.status()
    assert [(n.name, n.address, n.alive, n.ray_state) for n in status.nodes] == [
        ("head", HEAD_IP, True, "ALIVE"), ("worker1", W1_IP, True, "ALIVE"), ("worker2", W2_IP, True, "ALIVE")]
    assert status.controller is not None and (status.controller.node, status.controller.pid) == ("head", 42)
    assert sorted(r.node for r in status.replicas if r.deployment == "SleepyPid") == ["head", "head", "worker1",
                                                                                     "worker1", "worker2", "worker2"]
    urls = {p.node: p.url for p in status.proxies}
    assert urls == {e.node: e.url for e in cluster.endpoints()} and len(set(urls.values())) == 3
    assert cluster.health_problem() is None

    removed = cluster.down()
    assert removed[0] == RUN
    assert runner.argvs("kind", "delete", "cluster", "--name", f"serve-chaos-{RUN}")
    assert not cluster.run_dir.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(urls["head"].split(":")[2].rstrip("/"))), timeout=2)


def test_a_rayservice_that_never_gets_ready_says_why(settings, runner, api, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda tool: f"/usr/bin/{tool}")
    api.objects[("rayservices", NS, "serve-chaos")]["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "Initializing", "message": "Serve app health: DEPLOY_FAILED"}]
    api.objects[("deployments", "ray-system", "kuberay-operator")]["spec"] = {
        "selector": {"matchLabels": {"app": "kuberay"}}}
    api.put(PODS, {"metadata": {"name": "kuberay-operator-1", "labels": {"app": "kuberay"}},
                   "spec": {"containers": [{"name": "kuberay-operator"}]}}, "ray-system")
    api.log_text = lambda p, c: "failed to submit serve config: import error\n" if p == "kuberay-operator-1" else ""
    cluster = kind_cluster(settings, runner, api)
    with pytest.raises(Exception) as exc:
        cluster.up()
    message = str(exc.value)
    assert message.startswith("rayservice: timed out") and "DEPLOY_FAILED" in message
    assert "failed to submit serve config" in message and "rs-head-x1 (head) Running" in message
    assert runner.argvs("kind", "delete", "cluster")  # what was created is removed
    assert api.calls_of("get", RAYSERVICES.plural)
