"""The Kubernetes API as the kube and kind backends use it: one Protocol (``KubeApi``), one real
implementation on the official ``kubernetes`` client (``ClientApi``), and, for tests of the harness's own
logic, an in-memory one in ``harness.testing.kubefake``.

What goes through the API (no ``kubectl`` process): reading, listing, creating, server-side applying,
patching and deleting objects (pods, nodes, namespaces, events, Secrets, Deployments, RayServices,
RayClusters, CRDs), ``exec`` into a pod through the client's websocket stream, a pod's logs, and port-forward
streams (``harness.kube.forward`` bridges each to a local port). The kind CLI still creates and deletes
clusters and loads images; Helm still installs the operator where a chart repository is reachable.

Objects cross this border as the API serves them (``KubeObject``, JSON as dicts); callers read them with the
typed views of ``harness.kube.backend`` (``pod_view`` and friends). The Redis password only ever travels in
the body of an apply, never in a URL or an error: errors carry the status, reason and the server's message,
scrubbed by the caller.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from harness.kube.tools import Completed, KubeStackError

KubeObject = dict[str, Any]
PatchType = Literal["merge", "json"]
FIELD_MANAGER = "serve-chaos"
# what /readyz and a pod's log answer with: text when it works, a JSON Status when refused (asking for text only
# turns every refusal into "406 Not Acceptable", hiding the server's reason)
ACCEPT_TEXT = "text/plain, application/json;q=0.9"

INSTALL_CLIENT = ("the kube and kind backends need the `kubernetes` Python client: "
                  "pip install 'serve-chaos-harness[kube]' (or `make setup` in a checkout)")


class KubeApiError(KubeStackError):
    """The API server refused or failed a request; ``status`` is the HTTP status (0: not reached)."""

    def __init__(self, what: str, status: int, reason: str, message: str = ""):
        self.status = status
        self.reason = reason
        super().__init__(f"{what}: {status or 'no answer'} {reason}{': ' + message if message else ''}")

    @property
    def not_found(self) -> bool:
        return self.status == 404


@dataclass(frozen=True)
class Resource:
    """A resource type by its API path parts: ``group_version`` (``v1``, ``apps/v1``, ``ray.io/v1``) and plural."""

    group_version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.plural} are namespaced: a namespace is needed")
            base += f"/namespaces/{namespace}"
        path = f"{base}/{self.plural}"
        if name:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return path


PODS = Resource("v1", "pods")
NODES = Resource("v1", "nodes", namespaced=False)
NAMESPACES = Resource("v1", "namespaces", namespaced=False)
EVENTS = Resource("v1", "events")
SECRETS = Resource("v1", "secrets")
DEPLOYMENTS = Resource("apps/v1", "deployments")
RAYSERVICES = Resource("ray.io/v1", "rayservices")
RAYCLUSTERS = Resource("ray.io/v1", "rayclusters")
CRDS = Resource("apiextensions.k8s.io/v1", "customresourcedefinitions", namespaced=False)


class PortStream(Protocol):
    """One TCP connection to a pod's port, through the API server: bytes in and out of ``socket``."""

    @property
    def socket(self) -> socket.socket: ...

    def close(self) -> None: ...


class KubeApi(Protocol):
    """What the backends ask of a Kubernetes API server. Every call raises KubeApiError when refused."""

    context: str

    def ready(self) -> str | None:
        """None when ``/readyz`` answers ok; else what was seen."""

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> KubeObject | None:
        """The object, or None when it does not exist."""

    def list(self, resource: Resource, namespace: str | None = None, selector: str = "") -> list[KubeObject]: ...

    def create(self, body: KubeObject, namespace: str | None = None) -> KubeObject: ...

    def apply(self, bodies: Sequence[KubeObject], namespace: str | None = None) -> None:
        """Server-side apply of each object in order (field manager ``serve-chaos``, conflicts forced)."""

    def patch(self, resource: Resource, name: str, patch: object, kind: PatchType,
              namespace: str | None = None) -> KubeObject: ...

    def delete(self, resource: Resource, name: str, namespace: str | None = None,
               grace_period_s: int | None = None) -> bool:
        """Ask for the deletion (not waiting for it); False when there was nothing to delete."""

    def exec(self, namespace: str, pod: str, container: str, argv: Sequence[str], timeout_s: float) -> Completed:
        """Run ``argv`` in the container; the exit status, stdout and stderr as a command's. A timeout is a
        failed command (returncode -1), not an exception."""

    def logs(self, namespace: str, pod: str, container: str, tail: int, previous: bool = False) -> str: ...

    def open_port(self, namespace: str, pod: str, port: int) -> PortStream: ...

    def close(self) -> None: ...


# --- the real one ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Kind:
    resource: Resource
    kind: str


class ClientApi:
    """``KubeApi`` on the official client, for one context of one kubeconfig (None: the default file)."""

    def __init__(self, context: str, kubeconfig: str | None = None, request_timeout_s: float = 30.0):
        self.context = context
        self.kubeconfig = kubeconfig
        self.request_timeout_s = request_timeout_s
        self._client: Any = None
        self._kinds: dict[tuple[str, str], _Kind] = {}
        self._lock = threading.Lock()

    # --- the client, made on first use (the kubeconfig may be written after this object) -------------------
    def _api(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    from kubernetes import config
                except ImportError:
                    raise KubeStackError(INSTALL_CLIENT) from None
                try:
                    self._client = config.new_client_from_config(config_file=self.kubeconfig, context=self.context)
                except Exception as exc:  # noqa: BLE001 - the client raises ConfigException, IOError, KeyError
                    raise KubeStackError(f"cannot load context {self.context!r} from "
                                         f"{self.kubeconfig or 'the default kubeconfig'}: {exc}") from None
            return self._client

    def _stream_core(self) -> Any:
        """A CoreV1Api on an ApiClient of its own, for one exec or port-forward stream: the client's ``stream``
        swaps its ApiClient's ``call_api`` for a websocket call while the stream opens, so on a shared client
        a request of another thread at that moment would go out as a websocket too (seen on kind: "Missing
        required parameter `ports`" while listing pods). The caller closes the ApiClient when its stream ends."""
        from kubernetes import client

        return client.CoreV1Api(client.ApiClient(configuration=self._api().configuration))

    def _send(self, method: str, path: str, query: Mapping[str, str] | None, body: object, content_type: str,
              accept: str, timeout_s: float | None) -> tuple[int, str, bytes]:
        """One request; (status, reason, body). A server that is not reached raises KubeApiError (status 0)."""
        api = self._api()
        try:
            request = api.param_serialize(method, path, query_params=list((query or {}).items()),
                                          header_params={"Accept": accept, "Content-Type": content_type},
                                          body=body, auth_settings=["BearerToken"])
            response = api.call_api(*request, _request_timeout=timeout_s or self.request_timeout_s)
            data = response.read() or b""
        except Exception as exc:  # noqa: BLE001 - urllib3's connection errors: the server was not reached
            raise KubeApiError(f"{method} {path}", 0, type(exc).__name__, str(exc)[:300]) from None
        return int(response.status), str(response.reason or ""), data

    def _request(self, what: str, method: str, path: str, *, query: Mapping[str, str] | None = None,
                 body: object = None, content_type: str = "application/json", timeout_s: float | None = None) -> Any:
        status, reason, data = self._send(method, path, query, body, content_type, "application/json", timeout_s)
        if not 200 <= status <= 299:
            raise KubeApiError(what, status, reason, _server_message(data))
        return json.loads(data) if data else {}

    def ready(self) -> str | None:
        try:
            status, reason, data = self._send("GET", "/readyz", None, None, "application/json", ACCEPT_TEXT, None)
        except KubeApiError as exc:
            return f"/readyz not reached: {exc}"
        text = data.decode(errors="replace").strip()
        return None if status == 200 and text == "ok" else f"/readyz answered {status} {reason}: {text[:200]!r}"

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> KubeObject | None:
        try:
            return self._request(f"reading {resource.plural}/{name}", "GET", resource.path(namespace, name))
        except KubeApiError as exc:
            if exc.not_found:
                return None
            raise

    def list(self, resource: Resource, namespace: str | None = None, selector: str = "") -> list[KubeObject]:
        query = {"labelSelector": selector} if selector else {}
        data = self._request(f"listing {resource.plural}", "GET", resource.path(namespace), query=query)
        return list(data.get("items") or [])

    def create(self, body: KubeObject, namespace: str | None = None) -> KubeObject:
        found = self._kind(body)
        ns = (body.get("metadata") or {}).get("namespace") or namespace
        if found.resource.namespaced and not ns:
            raise KubeStackError(f"{body.get('kind')}/{_name(body)} is namespaced but names no namespace")
        return self._request(f"creating {body.get('kind')}/{_name(body)}", "POST",
                             found.resource.path(ns if found.resource.namespaced else None), body=body)

    def apply(self, bodies: Sequence[KubeObject], namespace: str | None = None) -> None:
        for body in bodies:
            found = self._kind(body)
            ns = (body.get("metadata") or {}).get("namespace") or namespace
            if found.resource.namespaced and not ns:
                raise KubeStackError(f"{body.get('kind')}/{_name(body)} is namespaced but names no namespace")
            self._request(f"applying {body.get('kind')}/{_name(body)}", "PATCH",
                          found.resource.path(ns if found.resource.namespaced else None, _name(body)),
                          query={"fieldManager": FIELD_MANAGER, "force": "true"}, body=body,
                          content_type="application/apply-patch+yaml")

    def patch(self, resource: Resource, name: str, patch: object, kind: PatchType,
              namespace: str | None = None) -> KubeObject:
        content_type = "application/merge-patch+json" if kind == "merge" else "application/json-patch+json"
        if kind == "json":
            # the client sends a JSON patch only when the body is a list: it silently turns anything else (a
            # tuple of operations) into a strategic merge patch, which the server then refuses or misreads
            if isinstance(patch, Mapping) or not isinstance(patch, Iterable) or isinstance(patch, (str, bytes)):
                raise KubeStackError(f"a JSON patch of {resource.plural}/{name} is a list of operations, "
                                     f"not {type(patch).__name__}")
            patch = list(patch)
        return self._request(f"patching {resource.plural}/{name}", "PATCH", resource.path(namespace, name),
                             body=patch, content_type=content_type)

    def delete(self, resource: Resource, name: str, namespace: str | None = None,
               grace_period_s: int | None = None) -> bool:
        body: dict[str, object] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if grace_period_s is not None:
            body["gracePeriodSeconds"] = int(grace_period_s)
        try:
            self._request(f"deleting {resource.plural}/{name}", "DELETE", resource.path(namespace, name), body=body)
        except KubeApiError as exc:
            if exc.not_found:
                return False
            raise
        return True

    def exec(self, namespace: str, pod: str, container: str, argv: Sequence[str], timeout_s: float) -> Completed:
        from kubernetes.stream import stream

        shown = ("exec", pod, container, *argv)
        core = self._stream_core()
        try:
            ws = stream(core.connect_get_namespaced_pod_exec, pod, namespace, container=container,
                        command=list(argv), stderr=True, stdin=False, stdout=True, tty=False,
                        _preload_content=False, _request_timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - ApiException wrapping the websocket handshake's errors
            core.api_client.close()
            status, reason, message = _stream_refusal(exc)
            if status:
                return Completed(shown, -1, "", f"exec refused: {status} {reason}: {message}")
            return Completed(shown, -1, "", f"exec failed: {reason}: {message}")
        try:
            out: list[str] = []
            err: list[str] = []
            deadline = time.monotonic() + timeout_s
            while ws.is_open() and time.monotonic() < deadline:
                ws.update(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                if ws.peek_stdout():
                    out.append(ws.read_stdout())
                if ws.peek_stderr():
                    err.append(ws.read_stderr())
            if ws.is_open():
                return Completed(shown, -1, "".join(out), "".join(err) + f"\nexec timed out after {timeout_s:g}s")
            out.append(ws.read_stdout() or "")
            err.append(ws.read_stderr() or "")
            code = ws.returncode
            return Completed(shown, int(code) if code is not None else -1, "".join(out), "".join(err))
        except Exception as exc:  # noqa: BLE001 - the pod went away mid-command
            return Completed(shown, -1, "", f"exec stream broke: {type(exc).__name__}: {str(exc)[:300]}")
        finally:
            ws.close()
            core.api_client.close()

    def logs(self, namespace: str, pod: str, container: str, tail: int, previous: bool = False) -> str:
        query = {"container": container, "tailLines": str(tail)}
        if previous:
            query["previous"] = "true"
        try:
            status, reason, data = self._send("GET", PODS.path(namespace, pod, "log"), query, None,
                                              "application/json", ACCEPT_TEXT, None)
        except KubeApiError as exc:
            return f"(no log: {exc})"
        text = data.decode(errors="replace")
        # 204: the pod has no log yet (not placed on a node): an empty log, not a failure
        return text if 200 <= status <= 299 else f"(no log: {status} {reason}: {_server_message(data)})"

    def open_port(self, namespace: str, pod: str, port: int) -> PortStream:
        from kubernetes.stream import portforward

        core = self._stream_core()
        try:
            forward = portforward(core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))
        except Exception as exc:  # noqa: BLE001 - ApiException wrapping the websocket handshake's errors
            core.api_client.close()
            raise KubeApiError(f"port-forward to {pod}:{port}", *_stream_refusal(exc)) from None
        return _ClientPortStream(forward, port, core.api_client)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # --- discovery: which resource an object of a kind lives in -------------------------------------------
    def _kind(self, body: Mapping[str, Any]) -> _Kind:
        api_version, kind = str(body.get("apiVersion", "")), str(body.get("kind", ""))
        key = (api_version, kind)
        if key not in self._kinds:
            path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            try:
                listing = self._request(f"discovering {api_version}", "GET", path)
            except KubeApiError as exc:
                if not exc.not_found:
                    raise
                listing = {}  # the whole group/version is not served
            for res in listing.get("resources", []):
                if "/" not in res.get("name", ""):
                    self._kinds[(api_version, res["kind"])] = _Kind(
                        Resource(api_version, res["name"], bool(res.get("namespaced"))), res["kind"])
            if key not in self._kinds:
                raise KubeStackError(f"the API server serves no kind {kind} in {api_version} "
                                     "(is its CRD installed?)")
        return self._kinds[key]


class _ClientPortStream:
    def __init__(self, forward: Any, port: int, api_client: Any):
        self._forward = forward
        self._socket = forward.socket(port)
        self._api_client = api_client  # the stream's own (ClientApi._stream_core), closed with it

    @property
    def socket(self) -> socket.socket:
        return self._socket

    def close(self) -> None:
        """Drain what the pod sent and was not read before closing, so the client's proxy thread sees an end
        of stream rather than a reset (which it raises, unhandled, in its own thread)."""
        try:
            self._socket.setblocking(False)
            while self._socket.recv(65536):
                pass
        except OSError:  # BlockingIOError: drained; or the stream is already gone
            pass
        try:
            self._socket.close()
        finally:
            try:
                self._forward.close()
            finally:
                self._api_client.close()


def _name(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name", ""))


_HANDSHAKE = re.compile(r"Handshake status (\d+) ([^-]*?)\s*-\+-\+-.*-\+-\+-\s*(.*)", re.DOTALL)


def _stream_refusal(exc: BaseException) -> tuple[int, str, str]:
    """(status, reason, message) of a failed exec or port-forward handshake.

    The client wraps every websocket error in ``ApiException(status=0, reason=str(error))``: the server's real
    status is on the wrapped ``WebSocketBadStatusException`` (or, failing that, in the text it left)."""
    from kubernetes.client.exceptions import ApiException

    inner = exc.__context__ if isinstance(exc, ApiException) and not exc.status else exc
    code = getattr(inner, "status_code", None)
    if isinstance(code, int) and code:
        return code, str(getattr(inner, "status_message", "") or ""), _server_message(getattr(inner, "resp_body", b""))
    if isinstance(exc, ApiException) and exc.status:
        return int(exc.status), str(exc.reason or ""), _server_message(exc.body)
    text = str(exc.reason if isinstance(exc, ApiException) else exc)
    found = _HANDSHAKE.search(text)
    if found:
        return int(found.group(1)), found.group(2).strip(), _server_message(found.group(3).strip())
    return 0, type(inner or exc).__name__, text[:300]


def _server_message(body: object) -> str:
    """The ``message`` of a Status the server answered with (or the start of whatever it sent)."""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if not body:
        return ""
    try:
        status = json.loads(str(body))
    except ValueError:
        return str(body)[:300]
    return str(status.get("message", ""))[:500] if isinstance(status, dict) else str(body)[:300]


def load_documents(text: str) -> list[KubeObject]:
    """The objects of a multi-document YAML manifest (Lists unpacked; empty documents skipped)."""
    import yaml

    out: list[KubeObject] = []
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        out.extend(_flatten(doc))
    return out


def _flatten(doc: Mapping[str, Any]) -> Iterable[KubeObject]:
    if str(doc.get("kind", "")).endswith("List") and "items" in doc:
        for item in doc["items"]:
            yield from _flatten(item)
    else:
        yield dict(doc)
