"""The Kubernetes objects of a run as typed records: what ``manifests`` makes and ``kuberay_schema`` checks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object; ``body`` is the object as the API takes it."""

    kind: str
    name: str
    body: dict


@dataclass(frozen=True)
class StackManifests:
    """The objects of one run, in the order they are applied."""

    namespace: Manifest
    secret: Manifest | None
    app_code: tuple[Manifest, ...]
    redis: tuple[Manifest, ...]
    rayservice: Manifest

    def all(self) -> tuple[Manifest, ...]:
        return (self.namespace, *((self.secret,) if self.secret else ()), *self.app_code, *self.redis,
                self.rayservice)
