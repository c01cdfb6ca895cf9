"""Which Kubernetes contexts the harness may change: an allowlist of globs (default ``kind-*``).

Every operation that creates, deletes, scales, kills or freezes anything asks ``require_allowed`` first;
reading (status, logs) does not. The refusal says how to allow a context on purpose.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from harness.kube.settings import ALLOWED_CONTEXTS_ENV, DEFAULT_SETTINGS
from harness.kube.tools import KubeStackError


class ContextNotAllowed(KubeStackError):
    """A destructive operation was refused on a context outside the allowlist."""


def context_allowed(context: str, patterns: tuple[str, ...]) -> bool:
    return bool(context) and any(fnmatchcase(context, pattern) for pattern in patterns)


def require_allowed(context: str, patterns: tuple[str, ...], operation: str) -> None:
    if context_allowed(context, patterns):
        return
    allowed = ", ".join(patterns) or "nothing"
    raise ContextNotAllowed(
        f"refusing to {operation} on kube context {context!r}: it is not on the allowlist ({allowed}). "
        "The harness deletes pods, scales groups and kills processes there. To allow it on purpose, set "
        f"{ALLOWED_CONTEXTS_ENV}={context} (comma-separated glob patterns), or add it to [kube] allowed_contexts "
        f"in a --kube-config file overriding {DEFAULT_SETTINGS.name}")
