"""Our own scenario, on the harness's public API: kill the proxy of a worker; the other proxies keep serving
(within budgets.toml's [proxy_restart]), and the proxy comes back in a new process."""

from harness.faults import make_fault
from harness.scenario import Evidence, Procedure, run_procedure
from harness.verdict import Status, Verdict, explain


def proxy_in_a_new_process(e: Evidence) -> Verdict:
    """The killed node's proxy runs again, with another PID than before."""
    before = {p.node: p.pid for p in e.before.proxies}
    after = {p.node: p.pid for p in e.after.proxies}
    node = e.fault.target
    if after.get(node) is None:
        return Verdict("proxy_in_a_new_process", Status.FAIL, f"no proxy on {node} after the fault")
    if after[node] == before.get(node):
        return Verdict("proxy_in_a_new_process", Status.FAIL, f"the proxy on {node} kept pid {after[node]}")
    return Verdict("proxy_in_a_new_process", Status.PASS, f"proxy on {node}: pid {before.get(node)} -> {after[node]}")


def test_proxy_restart(serve_chaos_stack, serve_chaos_scenario):
    run = serve_chaos_scenario(serve_chaos_stack, "proxy_restart")
    target = serve_chaos_stack.worker_names()[0]
    endpoints = serve_chaos_stack.endpoints()
    serving = tuple(e.node for e in endpoints if e.node != target)
    result = run_procedure(run, Procedure(make_fault("kill-proxy", serve_chaos_stack, target), endpoints, serving,
                                          evidence=(proxy_in_a_new_process,)))
    assert result.verdict.status is Status.PASS, explain(result.verdict)
