"""The report in a real browser: headless Chromium opens index.html from disk with no network, runs plotly,
takes a screenshot, and logs every network request (Chromium's NetLog) so that a page that reaches out fails.

Needs Debian's ``chromium`` package (``apt-get install chromium``); skipped without it.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_report_support import copy_real_run, three_verdicts_run, write_scenario

from harness.report import attach_timeline, write_run_report

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs a headless browser: install Debian's chromium package (apt-get install chromium)")

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: the network is off
    "--virtual-time-budget=5000",  # run the page's scripts (plotly) before dumping the DOM
)
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "chrome-error:")
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class PageLoad:
    dom: str  # the DOM after the scripts ran
    screenshot: Path
    page_requests: tuple[str, ...]  # every non-local URL the page asked for (browser housekeeping excluded)


def page_requests(netlog: Path) -> tuple[str, ...]:
    """URLs requested on behalf of a file:// page. Chromium's own background requests (update checks, time,
    accounts) carry another network isolation key and are not the page's doing."""
    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if event["type"] == start_job and str(params.get("network_isolation_key", "")).startswith("file://"):
            urls.append(params["url"])
    return tuple(u for u in urls if not u.startswith(LOCAL_SCHEMES))


def load_offline(page: Path, work: Path, *, height: int = 2400) -> PageLoad:
    work.mkdir(parents=True, exist_ok=True)
    screenshot, netlog = work / "screenshot.png", work / "netlog.json"
    proc = subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={work / 'profile'}", f"--log-net-log={netlog}",
         f"--window-size=1400,{height}", f"--screenshot={screenshot}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}"
    return PageLoad(proc.stdout, screenshot, page_requests(netlog))


class ExternalRefs(HTMLParser):
    """Elements that would load something from outside: src/href of script, link, img, iframe, ... not file-relative."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            return  # a link is only followed when clicked
        self.found += [f"<{tag} {k}={v}>" for k, v in attrs
                       if k in ("src", "href") and v and re.match(r"(https?:)?//", v)]


def external_refs(dom: str) -> list[str]:
    parser = ExternalRefs()
    parser.feed(dom)
    return parser.found


def plots_rendered(dom: str) -> int:
    """Plotly graphs that drew: a js-plotly-plot div holds its main-svg once plotly has run."""
    return len(re.findall(r'class="[^"]*\bjs-plotly-plot\b', dom)) if 'class="main-svg"' in dom else 0


def test_the_run_report_renders_its_plots_offline_and_requests_nothing(tmp_path: Path):
    run_dir = three_verdicts_run(tmp_path / "reports" / "20261125-120000-abcd")
    write_scenario(run_dir, "worker_pod_failure", outage=(5.0, 19.0), recovered=False, verdict=False)  # a crash
    page = write_run_report(run_dir)
    assert len(re.findall(r'class="plotly-graph-div"', page.read_text())) == 4

    load = load_offline(page, tmp_path / "browser")
    assert plots_rendered(load.dom) == 4
    assert load.dom.count('class="main-svg"') >= 2 * 4
    assert len(re.findall(r'class="trace bars"', load.dom)) >= 4  # request bars were drawn
    assert "requests to a" in load.dom and "injected, not yet in effect" in load.dom
    assert external_refs(load.dom) == []
    assert load.page_requests == ()
    data = load.screenshot.read_bytes()
    assert data.startswith(PNG) and len(data) > 50_000, "the screenshot is missing or blank"


def test_a_real_run_and_a_standalone_timeline_render_offline(tmp_path: Path):
    run_dir = copy_real_run(tmp_path)
    load = load_offline(write_run_report(run_dir), tmp_path / "run")
    assert plots_rendered(load.dom) == 1 and load.page_requests == () and external_refs(load.dom) == []
    timeline = attach_timeline(run_dir / "test_worker_pod_failure")
    load = load_offline(timeline, tmp_path / "timeline", height=1200)
    assert plots_rendered(load.dom) == 1 and load.page_requests == () and external_refs(load.dom) == []


def test_the_offline_checks_catch_a_page_that_reaches_out(tmp_path: Path):
    """The control: the same checks on a page that loads a script and an image from the network."""
    page = tmp_path / "calls-out.html"
    page.write_text('<!doctype html><html><head><script src="https://cdn.example.invalid/plotly.min.js"></script>'
                    '</head><body><img src="http://images.example.invalid/x.png"><p>hello</p></body></html>')
    load = load_offline(page, tmp_path / "browser", height=400)
    assert set(load.page_requests) == {
        "https://cdn.example.invalid/plotly.min.js", "http://images.example.invalid/x.png"}
    assert len(external_refs(load.dom)) == 2
    assert plots_rendered(load.dom) == 0
