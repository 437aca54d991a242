"""The pod's identity, from the env the operator renders (hasmb.controller.render)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


class PodEnvError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PodEnv:
    node: str  # HASMB_NODE: the node this pod is pinned to (spec.nodeName)
    svm: str  # HASMB_SVM
    lease: str  # HASMB_LEASE: the SVM's ownership Lease, in `namespace`
    namespace: str  # HASMB_NAMESPACE
    pod_name: str  # HASMB_POD_NAME

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> PodEnv:
        env = os.environ if environ is None else environ
        missing = [
            k
            for k in ("HASMB_NODE", "HASMB_SVM", "HASMB_LEASE", "HASMB_NAMESPACE", "HASMB_POD_NAME")
            if not env.get(k)
        ]
        if missing:
            raise PodEnvError(f"--kube needs the pod env; missing {', '.join(missing)}")
        return cls(
            node=env["HASMB_NODE"],
            svm=env["HASMB_SVM"],
            lease=env["HASMB_LEASE"],
            namespace=env["HASMB_NAMESPACE"],
            pod_name=env["HASMB_POD_NAME"],
        )

    @staticmethod
    def wanted(environ: Mapping[str, str] | None = None) -> bool:
        """Kubernetes mode is automatic where the operator set HASMB_LEASE."""
        env = os.environ if environ is None else environ
        return bool(env.get("HASMB_LEASE"))

    @property
    def owner_name(self) -> str:
        """The handle store's owner string: stable across restarts of this pod."""
        return f"{self.svm}@{self.node}"
