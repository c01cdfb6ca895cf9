"""An in-memory Kubernetes API (``KubeApi``) for tests of the harness's own logic: objects in a dict, label
selectors of the ``k=v,k2`` kind, merge and JSON patches, exec answered by a function, and port-forward streams
served by a function on the other end of a socket pair. It records every call. It stands in for the API
server only where the harness's decisions are tested; the client itself is tested against a real
kube-apiserver (tests/test_kube_apiserver.py) and on kind.
"""

from __future__ import annotations

import copy
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from harness.kube.api import (
    CRDS,
    DEPLOYMENTS,
    EVENTS,
    NAMESPACES,
    NODES,
    PODS,
    RAYCLUSTERS,
    RAYSERVICES,
    SECRETS,
    KubeApiError,
    KubeObject,
    PatchType,
    Resource,
)
from harness.kube.tools import Completed

KNOWN = {"Pod": PODS, "Node": NODES, "Namespace": NAMESPACES, "Event": EVENTS, "Secret": SECRETS,
         "Deployment": DEPLOYMENTS, "RayService": RAYSERVICES, "RayCluster": RAYCLUSTERS,
         "CustomResourceDefinition": CRDS}
CLUSTER_SCOPED = {"Namespace", "Node", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


@dataclass(frozen=True)
class ApiCall:
    verb: str
    plural: str = ""
    namespace: str | None = None
    name: str = ""
    body: object = None


def resource_of(body: KubeObject) -> Resource:
    kind = str(body.get("kind", ""))
    if kind in KNOWN:
        return KNOWN[kind]
    version = str(body.get("apiVersion", "v1"))
    return Resource(version, kind.lower() + "s", namespaced=kind not in CLUSTER_SCOPED)


def selects(selector: str, labels: dict) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, eq, value = term.partition("=")
        if eq and labels.get(key) != value:
            return False
        if not eq and key not in labels:
            return False
    return True


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def json_patch(target: KubeObject, ops: Sequence[dict]) -> KubeObject:
    """RFC 6902's test, replace and add (what the harness sends); a failed test is the server's 422."""
    doc = copy.deepcopy(target)
    for op in ops:
        *parents, last = [p for p in op["path"].split("/")[1:]]
        node: object = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
        key: int | str = int(last) if isinstance(node, list) else last
        if op["op"] == "test":
            if node[key] != op["value"]:  # type: ignore[index]
                raise KubeApiError("patching", 422, "Unprocessable Entity", f"test failed at {op['path']}")
        elif op["op"] in ("replace", "add"):
            node[key] = copy.deepcopy(op["value"])  # type: ignore[index]
        else:
            raise ValueError(f"the fake does not do {op['op']}")
    return doc


class FakePortStream:
    def __init__(self, sock: socket.socket):
        self._socket = sock

    @property
    def socket(self) -> socket.socket:
        return self._socket

    def close(self) -> None:
        self._socket.close()


@dataclass
class FakeApi:
    context: str = "kind-x"
    calls: list[ApiCall] = field(default_factory=list)
    objects: dict[tuple[str, str | None, str], KubeObject] = field(default_factory=dict)
    ready_problem: str | None = None
    exec_answer: Callable[[str, str, tuple[str, ...]], tuple[int, str, str]] = lambda pod, container, argv: (0, "", "")
    log_text: Callable[[str, str], str] = lambda pod, container: ""
    failures: dict[str, KubeApiError] = field(default_factory=dict)  # verb (or verb:plural) -> the error it raises
    after_patch: list[Callable[[ApiCall], None]] = field(default_factory=list)
    port_servers: dict[tuple[str, int], Callable[[socket.socket], None]] = field(default_factory=dict)
    closed: bool = False

    # --- test helpers -----------------------------------------------------------------------------------------
    def put(self, resource: Resource, obj: KubeObject, namespace: str | None = None) -> None:
        meta = obj.setdefault("metadata", {})
        ns = namespace or meta.get("namespace") if resource.namespaced else None
        if ns:
            meta["namespace"] = ns
        self.objects[(resource.plural, ns, meta["name"])] = obj

    def items(self, resource: Resource, namespace: str | None = None) -> list[KubeObject]:
        return [o for (plural, ns, _), o in self.objects.items()
                if plural == resource.plural and (namespace is None or ns == namespace)]

    def calls_of(self, verb: str, plural: str | None = None) -> list[ApiCall]:
        return [c for c in self.calls if c.verb == verb and (plural is None or c.plural == plural)]

    def changes(self) -> list[ApiCall]:
        """Every call that would change the cluster or run something in it."""
        return [c for c in self.calls if c.verb in ("create", "apply", "patch", "delete", "exec", "open_port")]

    def _record(self, call: ApiCall) -> None:
        self.calls.append(call)
        for key in (f"{call.verb}:{call.plural}", call.verb):
            if key in self.failures:
                raise self.failures[key]

    def _key(self, resource: Resource, namespace: str | None, name: str) -> tuple[str, str | None, str]:
        return (resource.plural, namespace if resource.namespaced else None, name)

    # --- KubeApi ------------------------------------------------------------------------------------------------
    def ready(self) -> str | None:
        self._record(ApiCall("ready"))
        return self.ready_problem

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> KubeObject | None:
        self._record(ApiCall("get", resource.plural, namespace, name))
        found = self.objects.get(self._key(resource, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(self, resource: Resource, namespace: str | None = None, selector: str = "") -> list[KubeObject]:
        self._record(ApiCall("list", resource.plural, namespace, body=selector))
        return [copy.deepcopy(o) for o in self.items(resource, namespace if resource.namespaced else None)
                if selects(selector, (o.get("metadata") or {}).get("labels") or {})]

    def create(self, body: KubeObject, namespace: str | None = None) -> KubeObject:
        resource = resource_of(body)
        name = body["metadata"]["name"]
        ns = body["metadata"].get("namespace") or namespace
        self._record(ApiCall("create", resource.plural, ns, name, copy.deepcopy(body)))
        key = self._key(resource, ns, name)
        if key in self.objects:
            raise KubeApiError(f"creating {name}", 409, "Conflict", f"{resource.plural} {name!r} already exists")
        self.objects[key] = copy.deepcopy(body)
        return copy.deepcopy(body)

    def apply(self, bodies: Sequence[KubeObject], namespace: str | None = None) -> None:
        for body in bodies:
            resource = resource_of(body)
            ns = (body.get("metadata") or {}).get("namespace") or namespace
            self._record(ApiCall("apply", resource.plural, ns, body["metadata"]["name"], copy.deepcopy(body)))
            key = self._key(resource, ns, body["metadata"]["name"])
            self.objects[key] = merge_patch(self.objects.get(key), body)  # type: ignore[assignment]

    def patch(self, resource: Resource, name: str, patch: object, kind: PatchType,
              namespace: str | None = None) -> KubeObject:
        call = ApiCall("patch", resource.plural, namespace, name, copy.deepcopy(patch))
        self._record(call)
        key = self._key(resource, namespace, name)
        if key not in self.objects:
            raise KubeApiError(f"patching {name}", 404, "Not Found", f"{resource.plural} {name!r} not found")
        self.objects[key] = (merge_patch(self.objects[key], patch) if kind == "merge"  # type: ignore[assignment]
                             else json_patch(self.objects[key], patch))  # type: ignore[arg-type]
        for hook in self.after_patch:
            hook(call)
        return copy.deepcopy(self.objects[key])

    def delete(self, resource: Resource, name: str, namespace: str | None = None,
               grace_period_s: int | None = None) -> bool:
        self._record(ApiCall("delete", resource.plural, namespace, name, grace_period_s))
        return self.objects.pop(self._key(resource, namespace, name), None) is not None

    def exec(self, namespace: str, pod: str, container: str, argv: Sequence[str], timeout_s: float) -> Completed:
        argv = tuple(argv)
        self._record(ApiCall("exec", "pods", namespace, pod, (container, *argv)))
        rc, out, err = self.exec_answer(pod, container, argv)
        return Completed(("exec", pod, container, *argv), rc, out, err)

    def logs(self, namespace: str, pod: str, container: str, tail: int, previous: bool = False) -> str:
        self._record(ApiCall("logs", "pods", namespace, pod, (container, tail, previous)))
        return self.log_text(pod, container)

    def open_port(self, namespace: str, pod: str, port: int) -> FakePortStream:
        self._record(ApiCall("open_port", "pods", namespace, pod, port))
        serve = self.port_servers.get((pod, port))
        if serve is None:
            raise KubeApiError(f"port-forward to {pod}:{port}", 404, "Not Found", f"pods {pod!r} not found")
        mine, theirs = socket.socketpair()
        threading.Thread(target=serve, args=(theirs,), daemon=True).start()
        return FakePortStream(mine)

    def close(self) -> None:
        self.closed = True
