"""Thin, explicit wrappers over the machine: commands, network namespaces, links, iptables, processes.

Everything the harness creates carries the run id in its name (namespaces, links), its comment
(iptables rules) or its environment (processes: ``SERVE_CHAOS_RUN_ID``). Discovery for sweeping goes by
those labels only, never by a process name.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

LABEL_ENV = "SERVE_CHAOS_RUN_ID"
RUN_ID_RE = re.compile(r"sc[0-9a-f]{6}")
IPTABLES_COMMENT_PREFIX = "serve-chaos:"


class SystemError_(RuntimeError):
    """A system command failed; the message has the command and its stderr."""


def run(argv: list[str], *, check: bool = True, timeout: float = 30.0, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input_text)
    except FileNotFoundError:
        raise SystemError_(f"command not found: {argv[0]}") from None
    if check and proc.returncode != 0:
        raise SystemError_(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


# --- names -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Names:
    """Every name the run gives to what it creates."""

    run_id: str

    def netns(self, node: str) -> str:
        return f"{self.run_id}-{node}"

    @property
    def bridge(self) -> str:
        return f"{self.run_id}br"

    def veth_host(self, index: int) -> str:
        return f"{self.run_id}v{index}"

    def veth_peer(self, index: int) -> str:
        return f"{self.run_id}p{index}"

    @property
    def iptables_comment(self) -> str:
        return f"{IPTABLES_COMMENT_PREFIX}{self.run_id}"


# --- network namespaces and links ----------------------------------------------------------------------

def list_netns() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(netns: str) -> list[int]:
    proc = run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def list_links() -> list[str]:
    out = run(["ip", "-o", "link", "show"], check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def addresses_in_use() -> list[tuple[str, str]]:
    """(interface, CIDR) of every IPv4 address in the machine's namespace."""
    out = run(["ip", "-o", "-4", "addr", "show"], check=False).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            found.append((parts[1], parts[3]))
    return found


def routes_in_use() -> list[str]:
    out = run(["ip", "-4", "route", "show"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def create_bridge(name: str, address_cidr: str) -> None:
    run(["ip", "link", "add", name, "type", "bridge"])
    run(["ip", "addr", "add", address_cidr, "dev", name])
    run(["ip", "link", "set", name, "up"])


def create_netns_with_veth(netns: str, host_if: str, peer_if: str, bridge: str, address_cidr: str) -> None:
    run(["ip", "netns", "add", netns])
    run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if])
    run(["ip", "link", "set", host_if, "master", bridge])
    run(["ip", "link", "set", host_if, "up"])
    run(["ip", "link", "set", peer_if, "netns", netns])
    run(["ip", "-n", netns, "link", "set", peer_if, "name", "eth0"])
    run(["ip", "-n", netns, "addr", "add", address_cidr, "dev", "eth0"])
    run(["ip", "-n", netns, "link", "set", "eth0", "up"])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])


def delete_netns(netns: str) -> None:
    run(["ip", "netns", "del", netns], check=False)


def delete_link(name: str) -> None:
    run(["ip", "link", "del", name], check=False)


# --- iptables ------------------------------------------------------------------------------------------

def _iptables_rules(bridge: str, comment: str) -> list[list[str]]:
    tag = ["-m", "comment", "--comment", comment]
    return [
        ["FORWARD", "-i", bridge, *tag, "-j", "ACCEPT"],
        ["FORWARD", "-o", bridge, *tag, "-j", "ACCEPT"],
    ]


def add_forward_accept(bridge: str, comment: str) -> None:
    """Explicit ACCEPT for our bridge: a FORWARD policy of DROP (a Docker engine's) cannot cut the nodes apart."""
    for rule in _iptables_rules(bridge, comment):
        run(["iptables", "-I", *rule])


def iptables_rules_with_comment(prefix: str) -> list[list[str]]:
    """Rules (as -A argument lists) whose comment starts with ``prefix``, in the filter table."""
    if shutil.which("iptables") is None:
        return []
    out = run(["iptables", "-S"], check=False).stdout
    rules = []
    for line in out.splitlines():
        if line.startswith("-A ") and f'--comment {prefix}' in line.replace('"', ""):
            rules.append(line.replace('"', "").split()[1:])
    return rules


def delete_iptables_rule(rule: list[str]) -> None:
    run(["iptables", "-D", *rule], check=False)


def _drop_from(source: str, comment: str) -> list[str]:
    return ["INPUT", "-s", f"{source}/32", "-m", "comment", "--comment", comment, "-j", "DROP"]


def netns_input_drops(netns: str, comment: str) -> list[str]:
    """The sources whose packets ``netns``'s INPUT chain drops under ``comment`` (rules this harness added)."""
    out = run(["ip", "netns", "exec", netns, "iptables", "-S", "INPUT"], check=False).stdout
    sources = []
    for line in out.splitlines():
        parts = line.replace('"', "").split()
        if parts[:2] == ["-A", "INPUT"] and comment in parts and "-s" in parts and parts[-1] == "DROP":
            sources.append(parts[parts.index("-s") + 1].removesuffix("/32"))
    return sources


def add_input_drop(netns: str, source: str, comment: str) -> None:
    """Drop every packet from ``source`` on ``netns``'s INPUT chain (no netem in this kernel: iptables DROP).
    The rule lives in the namespace: deleting the namespace deletes it too."""
    if source not in netns_input_drops(netns, comment):
        run(["ip", "netns", "exec", netns, "iptables", "-I", *_drop_from(source, comment)])


def delete_input_drop(netns: str, source: str, comment: str) -> None:
    """Remove what ``add_input_drop`` added, exactly (a no-op when it is not there)."""
    while source in netns_input_drops(netns, comment):
        run(["ip", "netns", "exec", netns, "iptables", "-D", *_drop_from(source, comment)])


def add_random_drop(netns: str, probability: float, comment: str) -> None:
    """Drop each packet into ``netns`` with ``probability`` (iptables' statistic match: this kernel has no netem)."""
    run(["ip", "netns", "exec", netns, "iptables", "-I", "INPUT", "-m", "statistic", "--mode", "random",
         "--probability", f"{probability:.4f}", "-m", "comment", "--comment", comment, "-j", "DROP"])


def delete_rules_with_comment(netns: str, comment: str) -> int:
    """Remove every rule of ``netns``'s filter table that carries ``comment``; how many were removed."""
    out = run(["ip", "netns", "exec", netns, "iptables", "-S"], check=False).stdout
    removed = 0
    for line in out.splitlines():
        parts = line.replace('"', "").split()
        if parts[:1] == ["-A"] and comment in parts:
            run(["ip", "netns", "exec", netns, "iptables", "-D", *parts[1:]], check=False)
            removed += 1
    return removed


def set_rate_limit(link: str, rate_kbit: int) -> None:
    """A token-bucket limit on ``link``'s egress (tbf; no netem here). On a host-side veth that is the traffic
    into the node."""
    run(["tc", "qdisc", "replace", "dev", link, "root", "tbf", "rate", f"{rate_kbit}kbit", "burst", "16kbit",
         "latency", "400ms"])


def clear_rate_limit(link: str) -> None:
    run(["tc", "qdisc", "del", "dev", link, "root"], check=False)


def rate_limit_of(link: str) -> str | None:
    """The tbf rate on ``link`` (as tc prints it), None when there is none."""
    out = run(["tc", "qdisc", "show", "dev", link], check=False).stdout
    for line in out.splitlines():
        parts = line.split()
        if "tbf" in parts and "rate" in parts:
            return parts[parts.index("rate") + 1]
    return None


# --- processes -----------------------------------------------------------------------------------------

def labeled_processes() -> dict[int, str]:
    """PID → run id of every process whose environment carries the harness's label."""
    found: dict[int, str] = {}
    needle = f"{LABEL_ENV}=".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        for var in environ.split(b"\0"):
            if var.startswith(needle):
                found[int(entry.name)] = var[len(needle):].decode(errors="replace")
                break
    return found


def ns_pid(host_pid: int) -> int | None:
    """The PID a process has inside its own PID namespace (the innermost NSpid)."""
    try:
        for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except OSError:
        return None
    return None


def process_name(host_pid: int) -> str:
    try:
        return Path(f"/proc/{host_pid}/comm").read_text().strip()
    except OSError:
        return ""


def process_cmdline(host_pid: int) -> str:
    try:
        return Path(f"/proc/{host_pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def process_state(host_pid: int) -> str | None:
    """The kernel's one-letter state (R, S, T for stopped, Z ...), None if gone."""
    fields = _stat_fields(host_pid)
    return fields[0] if fields else None


def _stat_fields(host_pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (field 3 onwards), None if the PID is not in /proc."""
    try:
        stat = Path(f"/proc/{host_pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def process_parent(host_pid: int) -> int | None:
    fields = _stat_fields(host_pid)
    return int(fields[1]) if fields else None


def process_start_time(host_pid: int) -> int | None:
    """When the process started (clock ticks since boot): with the PID, it names one process, even a zombie."""
    fields = _stat_fields(host_pid)
    return int(fields[19]) if fields else None


def children(host_pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{host_pid}/task/{host_pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def signal_pids(pids: list[int], sig: signal.Signals) -> list[int]:
    """Send ``sig`` to each PID; return those that existed."""
    hit = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            hit.append(pid)
        except ProcessLookupError:
            continue
    return hit


def pid_alive(pid: int) -> bool:
    state = process_state(pid)
    return state is not None and state != "Z"


def process_identities(pids: list[int]) -> dict[int, int]:
    """PID → start time of each PID still in /proc: what names one process through its exit, zombie included."""
    found = {}
    for pid in pids:
        started = process_start_time(pid)
        if started is not None:
            found[pid] = started
    return found


def still_in_proc(processes: dict[int, int]) -> dict[int, str]:
    """Those of ``processes`` (PID → start time) still in /proc as the same process, a zombie included:
    PID → what it is (name, state, parent)."""
    left = {}
    for pid, started in processes.items():
        fields = _stat_fields(pid)
        if fields is not None and int(fields[19]) == started:
            left[pid] = f"{process_name(pid) or '?'}, state {fields[0]}, parent {fields[1]}"
    return left


def reap_own_zombies(processes: dict[int, int]) -> None:
    """Reap those of ``processes`` that are zombies whose parent is this process (no one else can)."""
    me = os.getpid()
    for pid in still_in_proc(processes):
        if process_state(pid) == "Z" and process_parent(pid) == me:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
