"""The nightly workflows parse as YAML and do what docs/kubernetes.md says they do."""

from __future__ import annotations

import yaml

from harness.stack.config import REPO_ROOT

WORKFLOWS = REPO_ROOT / ".github" / "workflows"


def load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict), name
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def steps(workflow: dict) -> list[dict]:
    (job,) = workflow["jobs"].values()
    assert isinstance(job["steps"], list) and job["timeout-minutes"] > 0 and job["runs-on"]
    return job["steps"]


def runs(workflow: dict) -> str:
    return "\n".join(str(s.get("run", "")) for s in steps(workflow))


def test_every_workflow_parses_and_is_scheduled():
    names = sorted(p.name for p in WORKFLOWS.glob("*.yml"))
    assert {"nightly-kind.yml", "nightly-local.yml"} <= set(names)
    for name in ("nightly-kind.yml", "nightly-local.yml"):
        workflow = load(name)
        assert workflow["on"]["schedule"][0]["cron"].count(" ") == 4
        assert "workflow_dispatch" in workflow["on"]
        assert workflow["permissions"] == {"contents": "read"}
        for step in steps(workflow):
            assert ("uses" in step) != ("run" in step), step
            if "uses" in step:
                assert "@" in step["uses"], f"unpinned action {step['uses']}"


def test_nightly_kind_runs_make_test_kind_as_it_ran_here_and_keeps_the_reports():
    workflow = load("nightly-kind.yml")
    text = runs(workflow)
    assert "make test-kind" in text and "sudo" in text
    assert "serve-chaos sweep --backend kind" in text
    uses = {s["uses"].split("@")[0]: s for s in steps(workflow) if "uses" in s}
    assert uses["actions/setup-go"]["with"]["go-version"] == "1.26"
    assert uses["actions/cache"]["with"]["path"] == ".kind-cache"
    assert workflow["jobs"]["scenarios-on-kind"]["env"]["SERVE_CHAOS_KIND_CACHE"].endswith("/.kind-cache")
    upload = uses["actions/upload-artifact"]
    assert upload["with"]["path"] == "reports/" and upload["if"] == "always()"


def test_nightly_local_runs_make_demo_as_root():
    assert "sudo --preserve-env=PATH make demo" in runs(load("nightly-local.yml"))
