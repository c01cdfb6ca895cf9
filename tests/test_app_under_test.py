"""The application under test, by configuration (harness/stack/app.py): defaults from the Serve config, a clear
error for each kind of bad input (naming the key), the request and body check reaching the real traffic child,
and the guide's checks on an app that is not the guide's."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from harness import guide
from harness.history import History
from harness.scenario import Evidence
from harness.stack.app import app_under_test
from harness.stack.cluster import Endpoint, NodeInfo, ReplicaInfo, StackStatus
from harness.stack.config import (
    HARNESS_APPS,
    REPO_ROOT,
    CheckConfig,
    ConfigError,
    RequestConfig,
    load_config,
)
from harness.stack.health import join_path
from harness.stack.serve_config import BESIDE_HEALTH_APP, build_serve_config
from harness.testing.loopback import LoopbackServer
from harness.traffic import (
    AnyOk,
    ExactBody,
    JsonField,
    PidBody,
    Traffic,
    TrafficPlan,
    response_check,
)
from harness.verdict import Status
from harness.waiting import wait_until

EXAMPLE = REPO_ROOT / "cluster" / "examples" / "recommender"

COMPOSED = """\
applications:
  - name: shop
    route_prefix: /
    import_path: shop_app:app
    deployments:
      - name: Front
      - name: Model
  - name: admin
    route_prefix: /admin
    import_path: shop_app:admin
"""


def user_stack(tmp_path: Path, app_keys: str = "", serve: str = COMPOSED, module: bool = True) -> Path:
    """A user's stack config of a few lines, beside their Serve config and code."""
    (tmp_path / "serve.yaml").write_text(serve)
    if module:
        (tmp_path / "shop_app.py").write_text("app = admin = None\n")
    path = tmp_path / "stack.toml"
    path.write_text(textwrap.dedent("""\
        [network]
        state_dir = "/tmp/sc-u"
        [app]
        serve_config = "serve.yaml"
        python_path = ["."]
        """) + textwrap.dedent(app_keys))
    return path


def resolve(path: Path):
    return app_under_test(load_config(path))


# --- defaults --------------------------------------------------------------------------------------------------

def test_only_serve_config_and_python_path_give_the_generic_defaults(tmp_path):
    cfg = load_config(user_stack(tmp_path))
    app = app_under_test(cfg)
    assert app.routes == ("/", "/admin") and app.applications == ("shop", "admin")
    assert (app.application, app.deployment) == ("shop", "Front")  # the first application's first deployment
    assert app.watch == () and app.num_replicas is None
    assert app.request == RequestConfig() and response_check(app.check) == AnyOk()
    # none of the guide's keys carried over: no PID check, no SleepyPid, the shipped ports kept
    assert cfg.app.import_path == "" and cfg.app.deployment == "" and cfg.app.serve_port == 8000
    # the health-check scenario runs on the harness's own toggle app, deployed beside the user's
    assert app.health is not None and app.health.beside and app.health.application == BESIDE_HEALTH_APP
    serve = build_serve_config(cfg)
    assert [a.name for a in serve.applications] == ["shop", "admin", BESIDE_HEALTH_APP]
    assert str(HARNESS_APPS) in cfg.app.python_path
    assert serve.application("shop").import_path == "shop_app:app"  # the Serve config's, untouched


def test_the_guide_config_names_its_app():
    app = app_under_test(load_config())
    assert (app.application, app.deployment, app.routes, app.watch) == ("app", "SleepyPid", ("/",), ("SleepyPid",))
    assert response_check(app.check) == PidBody()
    assert app.health is not None and (app.health.route, app.health.deployment, app.health.beside) == (
        "/health", "HealthToggle", False)


def test_the_example_targets_its_inner_deployment_and_its_own_health_check():
    app = app_under_test(load_config(EXAMPLE / "stack.toml"))
    assert (app.application, app.deployment) == ("recommender", "Ranker")
    assert app.request.method == "POST" and json.loads(app.request.body or "")["user"] == "ada"
    assert response_check(app.check) == JsonField("items")
    assert app.health is not None and not app.health.beside
    assert join_path(app.health.route, app.health.toggle_path) == "/admin/fail-ranker-health"  # as FailHealthCheck
    minimal = app_under_test(load_config(EXAMPLE / "stack-minimal.toml"))
    assert (minimal.deployment, minimal.request.method, minimal.health.beside) == ("Recommender", "GET", True)


def test_skip_mode_says_why_and_the_health_scenario_does_not_apply(tmp_path):
    app = resolve(user_stack(tmp_path, '[app.health]\nmode = "skip"\n'))
    assert app.health is None and "skip" in app.no_health_reason
    assert "does not apply" in guide.not_applicable(guide.GUIDE["health_check_failure"], app)
    assert guide.not_applicable(guide.GUIDE["replica_failure"], app) is None


# --- one clear error per kind of bad input -------------------------------------------------------------------

@pytest.mark.parametrize(("app_keys", "serve", "module", "key", "says"), [
    ("", "applications: [\n  - name: x\n", True, "app.serve_config", "not valid YAML"),
    ("", "proxy_location: EveryNode\n", True, "app.serve_config", "no 'applications' list"),
    ('application = "shopp"\n', COMPOSED, True, "app.application", "no application 'shopp'"),
    ('deployment = "Modle"\n', COMPOSED, True, "app.deployment", "no deployment 'Modle'"),
    ('watch = ["Ghost"]\n', COMPOSED, True, "app.watch", "no deployment 'Ghost'"),
    ('[app.traffic]\nroutes = ["/admin2"]\n', COMPOSED.replace("route_prefix: /\n", "route_prefix: /shop\n"), True,
     "app.traffic.routes", "no application serves '/admin2'"),
    ('[app.traffic]\nroutes = ["shop"]\n', COMPOSED, True, "app.traffic.routes", "must start with '/'"),
    ("", COMPOSED, False, "app.python_path", "module 'shop_app'"),
    ('import_path = "nowhere.mod:app"\n', COMPOSED, True, "app.import_path", "module 'nowhere.mod'"),
    ('import_path = "shop_app:"\n', COMPOSED, True, "app.import_path", "expected 'module:attribute'"),
    ('[app.traffic.check]\nkind = "json_field"\n', COMPOSED, True, "app.traffic.check", "needs the key 'field'"),
    ('[app.traffic.check]\nkind = "jsonish"\n', COMPOSED, True, "app.traffic.check.kind", "jsonish"),
    ('[app.traffic.request]\nmethod = "FETCH"\n', COMPOSED, True, "app.traffic.request.method", "FETCH"),
    ('[app.health]\nmode = "toggle"\napplication = "shop"\n', COMPOSED, True, "app.health",
     "needs 'deployment', 'toggle_path'"),
    ('[app.health]\nmode = "toggle"\napplication = "shopx"\ndeployment = "Model"\ntoggle_path = "/f"\n', COMPOSED,
     True, "app.health.application", "no application 'shopx'"),
    ('[app.health]\nmode = "toggle"\napplication = "shop"\ndeployment = "Modle"\ntoggle_path = "/f"\n', COMPOSED,
     True, "app.health.deployment", "no deployment 'Modle'"),
])
def test_bad_input_is_an_error_naming_the_key(tmp_path, app_keys, serve, module, key, says):
    with pytest.raises(ConfigError) as err:
        resolve(user_stack(tmp_path, app_keys, serve, module))
    message = str(err.value)
    assert f"'{key}" in message and says in message, message


def test_a_check_class_that_does_not_import_names_the_key():
    with pytest.raises(ConfigError, match="'app.traffic.check.class_path'.*no_such_module"):
        response_check(CheckConfig(kind="class", class_path="no_such_module:Check"))
    assert response_check(CheckConfig(kind="class", class_path="harness.traffic:AnyOk")) == AnyOk()


# --- body checks and the request, through the real traffic child ---------------------------------------------

def test_json_field_judges_presence_and_value():
    body = b'{"items": ["a"], "model": {"version": "2"}}'
    assert JsonField("items").judge(body).ok and JsonField("model.version", "2").judge(body).ok
    assert "expected '3'" in JsonField("model.version", "3").judge(body).detail
    assert "no field 'scores'" in JsonField("scores").judge(body).detail
    assert "expected JSON" in JsonField("items").judge(b"not json").detail
    assert response_check(CheckConfig(kind="exact", text="pong")) == ExactBody("pong")


def test_the_request_survives_the_trip_to_the_child():
    request = RequestConfig(method="POST", path="predict", body='{"x": 1}', headers={"Content-Type": "application/json"})
    plan = TrafficPlan("id", (Endpoint("a", "http://127.0.0.1:1/v1"),), 10.0, 2.0, 5.0, AnyOk(), "/tmp/h",
                       request=request)
    back = TrafficPlan.from_json(plan.to_json())
    assert back.request == request and back.url(back.endpoints[0]) == "http://127.0.0.1:1/v1/predict"


def test_traffic_posts_the_configured_body_and_judges_json(tmp_path):
    """The real traffic child sends the app's POST with its body and headers; a JSON body with the field counts,
    the loopback's PID body (no such field) does not."""
    request = RequestConfig(method="POST", path="recommend", body='{"user": "ada"}',
                            headers={"Content-Type": "application/json"})
    with LoopbackServer(body=b'{"items": ["atlas"]}') as good, LoopbackServer() as plain:
        with Traffic([Endpoint("good", good.url), Endpoint("plain", plain.url)], rate_per_endpoint=20, timeout_s=2,
                     duration_s=1.0, history_path=tmp_path / "h.jsonl", check=JsonField("items"),
                     request=request) as traffic:
            wait_until("10 requests recorded to each endpoint",
                       lambda: len(History.load(tmp_path / "h.jsonl").requests) >= 20, timeout_s=20)
            traffic.finish()
        head, body = good.last_request or ("", b"")
    assert head.startswith("POST /recommend HTTP/1.1") and "content-type: application/json" in head.lower()
    assert body == b'{"user": "ada"}'
    history = History.load(tmp_path / "h.jsonl")
    by_node = {n: [r for r in history.requests if r.node == n] for n in ("good", "plain")}
    assert by_node["good"] and all(r.ok for r in by_node["good"])
    assert by_node["plain"] and not any(r.ok for r in by_node["plain"])
    assert "no field 'items'" in by_node["plain"][0].detail


# --- the guide's checks on a composed app --------------------------------------------------------------------

def _status(replicas: tuple[ReplicaInfo, ...]) -> StackStatus:
    nodes = tuple(NodeInfo(n, "head" if n == "head" else "worker", "10.0.0.1", True, n, "ALIVE")
                  for n in ("head", "worker1", "worker2"))
    return StackStatus("run", nodes, None, (), replicas, (), True)


def test_identity_checks_watch_every_deployment_of_the_app_and_skip_nodes_without_one(tmp_path):
    """Without ``watch``, the checks look at every deployment of the targeted apps; a deployment with no replica
    on the killed node is not asked about there; a check with nothing at all to look at is UNKNOWN."""
    app = resolve(user_stack(tmp_path))
    before = _status((ReplicaInfo("f1", "Front", "worker1", 11, "RUNNING", "a1", "shop"),
                      ReplicaInfo("f2", "Front", "worker2", 12, "RUNNING", "a2", "shop"),
                      ReplicaInfo("m1", "Model", "worker2", 13, "RUNNING", "a3", "shop")))
    after = _status((ReplicaInfo("f3", "Front", "worker1", 21, "RUNNING", "a4", "shop"),
                     ReplicaInfo("f2", "Front", "worker2", 12, "RUNNING", "a2", "shop"),
                     ReplicaInfo("m1", "Model", "worker2", 13, "RUNNING", "a3", "shop")))

    class Fault:
        target = "worker1"

    e = Evidence(Fault(), History(), before, after, app)
    assert e.watched == ("Front", "Model")
    replaced = guide.target_replicas_replaced(e)  # only Front ran on worker1
    assert replaced.status is Status.PASS and replaced.name == "replicas_replaced", replaced.reason
    kept = guide.other_replicas_kept(e)
    assert kept.status is Status.PASS and "replicas_kept[Front]" in kept.reason and "replicas_kept[Model]" in kept.reason
    Fault.target = "head"  # nothing of the app ran on the head: nothing to look at, never a pass
    blind = guide.target_replicas_replaced(Evidence(Fault(), History(), before, after, app))
    assert blind.status is Status.UNKNOWN and "nothing to look at" in blind.reason


def test_the_spread_limit_comes_from_the_app_and_without_one_the_scenario_does_not_apply(tmp_path):
    assert app_under_test(load_config()).max_replicas_per_node == 2  # the guide's stack config sets it
    example = app_under_test(load_config(EXAMPLE / "stack.toml"))
    assert example.max_replicas_per_node == 1  # the example's Serve config sets it for Ranker

    class Stack:
        def app(self):
            return resolve(user_stack(tmp_path))  # Front sets no max_replicas_per_node

    with pytest.raises(guide.NotApplicable, match="replica_spread does not apply: deployment 'Front' sets no"):
        guide.replica_spread(None, Stack(), "worker1")
