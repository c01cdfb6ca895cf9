"""The local backend's logic without a stack: configuration, commands, names, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.local.layout import RunLayout, node_command, plan_nodes
from harness.local.system import RUN_ID_RE, Names
from harness.secrets import Secret
from harness.stack.config import DEFAULT_CONFIG, ConfigError, load_config
from harness.stack.serve_config import build_serve_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stack.toml"
    path.write_text(text)
    return path


def test_shipped_defaults_are_the_guides_example():
    cfg = load_config()
    assert (cfg.workers.count, cfg.head.cpus, cfg.app.num_replicas, cfg.gcs_ft) == (2, 2, 6, True)
    serve = build_serve_config(cfg).to_dict()
    dep = serve["applications"][0]["deployments"][0]
    assert dep["num_replicas"] == 6 and dep["ray_actor_options"] == {"num_cpus": 0}
    assert serve["proxy_location"] == "EveryNode" and serve["http_options"]["port"] == 8000


def test_every_shipped_key_has_a_comment():
    for line in DEFAULT_CONFIG.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, f"key without its one-line comment: {line}"


def test_user_file_overrides_a_subset(tmp_path):
    cfg = load_config(write(tmp_path, '[workers]\ncount = 3\nenv = { X = "1" }\n[gcs]\ngcs_ft = false\n'))
    assert cfg.workers.count == 3 and cfg.workers.env == {"X": "1"}
    assert cfg.workers.cpus == 1 and cfg.gcs_ft is False and cfg.head.cpus == 2


def test_user_relative_paths_resolve_against_the_users_file(tmp_path):
    (tmp_path / "code").mkdir()
    cfg = load_config(write(tmp_path, '[app]\npython_path = ["code"]\n'))
    assert cfg.app.python_path == [str(tmp_path / "code")]


@pytest.mark.parametrize("text, expected", [
    ('[workers]\ncount = "two"\n', "key 'workers.count': Input should be a valid integer"),
    ("[head]\nbogus = 1\n", "unknown key 'head.bogus'"),
    ('[head]\nrestart = "sometimes"\n', "key 'head.restart'"),
    ('[network]\nsubnet = "8.8.8.0/24"\n', "key 'network.subnet'"),
    ("[app]\ndashboard_port = 8000\n", "app.dashboard_port and app.serve_port are both 8000"),
    ("[workers\n", "is not valid TOML"),
    ('[network]\nstate_dir = "/tmp/a/very/long/folder/that/ray/cannot/use/for/sockets"\n', "too long for Ray's socket"),
])
def test_malformed_config_names_the_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert expected in str(err.value)


def test_serve_config_overrides(tmp_path):
    cfg = load_config(write(tmp_path, '[app]\nnum_replicas = 3\nmax_replicas_per_node = 1\nimport_path = "m:x"\n'))
    app = build_serve_config(cfg).to_dict()["applications"][0]
    assert app["import_path"] == "m:x"
    assert app["deployments"][0]["num_replicas"] == 3 and app["deployments"][0]["max_replicas_per_node"] == 1
    no_limit = load_config(write(tmp_path, "[app]\nmax_replicas_per_node = 0\n"))
    assert "max_replicas_per_node" not in build_serve_config(no_limit).to_dict()["applications"][0]["deployments"][0]


def test_serve_config_without_the_named_application(tmp_path):
    cfg = load_config(write(tmp_path, '[app]\napplication = "nope"\n'))
    with pytest.raises(ConfigError, match="no application 'nope'"):
        build_serve_config(cfg)


def test_node_commands_with_and_without_gcs_ft(tmp_path):
    secret = Secret("s3cret-value")
    for gcs_ft in (True, False):
        cfg = load_config(overrides={"gcs": {"gcs_ft": gcs_ft}})
        layout = RunLayout(tmp_path, "sc000001")
        layout.create()
        nodes = plan_nodes(cfg, layout.names)
        head = next(n for n in nodes if n.role == "head")
        argv, env = node_command(cfg, layout, head, nodes, secret)
        assert argv[:4] == ["ip", "netns", "exec", "sc000001-head"]
        assert "--pid" in argv and f"--node-ip-address={head.address}" in argv and "--head" in argv
        assert env["SERVE_CHAOS_RUN_ID"] == "sc000001"
        if gcs_ft:
            assert env["RAY_REDIS_ADDRESS"] == "10.213.7.2:6379"
            assert env["RAY_external_storage_namespace"] == "sc000001"
            assert "--redis-password=s3cret-value" in argv
        else:
            assert "RAY_REDIS_ADDRESS" not in env  # unset, never empty: an empty value crashes the head
            assert not any("redis-password" in a for a in argv)
        worker = next(n for n in nodes if n.name == "worker1")
        wargv, wenv = node_command(cfg, layout, worker, nodes, secret)
        assert f"--address={head.address}:6379" in wargv and not any("s3cret" in a for a in wargv)
        assert wenv["RAY_gcs_rpc_server_reconnect_timeout_s"] == "60"


def test_addresses_and_names_fit_the_kernel_limits():
    cfg = load_config(overrides={"workers": {"count": 20}})
    names = Names("sc0a1b2c")
    nodes = plan_nodes(cfg, names)
    assert len({n.address for n in nodes}) == len(nodes)
    for n in nodes:
        assert len(names.veth_host(n.index)) <= 15 and len(names.veth_peer(n.index)) <= 15
    assert len(names.bridge) <= 15
    assert RUN_ID_RE.match(names.netns("head")) and RUN_ID_RE.match(names.bridge)


def test_secret_never_shows_in_repr_or_str():
    secret = Secret("hunter2-password")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret) and "hunter2" not in f"{secret}"
    assert secret.scrub("pw=hunter2-password;") == "pw=***;"
    assert Secret.generate().reveal() != Secret.generate().reveal()
