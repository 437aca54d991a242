"""Render the Kubernetes objects an SVM is made of, from the typed resources.

Pure functions: the same inputs give byte-identical bodies, so the reconciler can
compare hashes instead of fields and a restarted operator recognises its own work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import yaml

from hasmb import contract
from hasmb.contract import (
    ADMIN_PORT,
    ANN_CONFIG_HASH,
    ANN_LIF_STATE,
    ANN_POD_HASH,
    CONFIG_KEY,
    EPMAP_PORT,
    LABEL_COMPONENT,
    LABEL_LIF,
    LABEL_NODE,
    LABEL_STORE,
    LABEL_STORE_ROLE,
    LABEL_SVM,
    PAIR_PORT,
    SMB_PORT,
    WITNESS_PORT,
)
from hasmb.controller.model import API_VERSION, EXPORT_ROOT, LIF, SVM, Share, volume_mount

CONFIG_DIR = "/etc/hasmb/config"
USERS_DIR = "/etc/hasmb/users"

_COMMON = {"app.kubernetes.io/part-of": "hasmb", "app.kubernetes.io/managed-by": "hasmb-operator"}


def svm_labels(svm: SVM, component: str, node: str | None = None) -> dict[str, str]:
    labels = {**_COMMON, LABEL_SVM: svm.meta.name, LABEL_COMPONENT: component}
    if node is not None:
        labels[LABEL_NODE] = node
    return labels


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _svm_owner(svm: SVM) -> list[dict[str, Any]]:
    return [owner_reference("SVM", svm.meta.name, svm.meta.uid)]


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class LifPlacement:
    """A LIF as the witness announces it."""

    name: str
    ip: str | None
    node: str
    available: bool


def state_url(svm: SVM) -> str:
    if svm.state_store == "file":
        return f"file:{EXPORT_ROOT}/.hasmb-state"
    if svm.state_store == "etcd":
        return f"etcd:{svm.state_endpoint}"
    return f"configmap:{svm.meta.namespace}/{svm.state_map_name}"


def smbd_config(svm: SVM, shares: list[Share], lifs: list[LifPlacement]) -> dict[str, Any]:
    """The hasmb-smbd config of contract 3 (plus `ownership`, which the loader ignores)."""
    share_entries = []
    for share in sorted(shares, key=lambda s: s.share_name.lower()):
        path = share.export_path
        if path is None:
            continue
        entry: dict[str, Any] = {
            "name": share.share_name,
            "path": path,
            "continuouslyAvailable": share.continuously_available,
            "readOnly": share.read_only,
            "encrypt": share.encrypt,
        }
        if share.comment:
            entry["comment"] = share.comment
        share_entries.append(entry)
    config: dict[str, Any] = {
        "netname": svm.netbios_name,
        "listen": f"0.0.0.0:{SMB_PORT}",
        "shares": share_entries,
        "state": state_url(svm),
        "logLevel": svm.log_level,
        "witness": {
            "listen": f"0.0.0.0:{WITNESS_PORT}",
            "endpointMapperPort": EPMAP_PORT,
            "interfaces": [
                {
                    "name": svm.netbios_name,
                    "ipv4": lif.ip or "",
                    "node": lif.node,
                    "state": "available" if lif.available else "unavailable",
                }
                for lif in sorted(lifs, key=lambda x: x.name)
            ],
        },
        "metrics": {"listen": f"0.0.0.0:{ADMIN_PORT}"},
        # hasmb-smbd in the pod (hasmb.podrt) watches the Lease and this ConfigMap
        "ownership": {
            "lease": f"{svm.meta.namespace}/{svm.lease_name}",
            "configMap": svm.config_map_name,
        },
    }
    if svm.users_secret:
        config["usersDir"] = USERS_DIR
    return config


def config_map(svm: SVM, config: dict[str, Any]) -> dict[str, Any]:
    text = yaml.safe_dump(config, sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": svm.config_map_name,
            "namespace": svm.meta.namespace,
            "labels": svm_labels(svm, "config"),
            "annotations": {ANN_CONFIG_HASH: _hash(text)},
            "ownerReferences": _svm_owner(svm),
        },
        "data": {CONFIG_KEY: text},
    }


# The configmap handle-state store's layout (hasmb.handles.configmap_store): NAME-meta
# holds {epoch, owner, shards}, NAME-0..N-1 hold {epoch, records...}. The operator
# creates them empty (epoch 0) so they carry hasmb.io/svm and an owner reference;
# hasmb-smbd raises the epoch to the Lease's on takeover and adds shards as needed.
STATE_SHARDS = 4


def state_store_objects(svm: SVM) -> list[dict[str, Any]]:
    store = svm.state_map_name

    def obj(name: str, role: str, data: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": svm.meta.namespace,
                "labels": {
                    **svm_labels(svm, "state"),
                    LABEL_STORE: store,
                    LABEL_STORE_ROLE: role,
                },
                "ownerReferences": _svm_owner(svm),
            },
            "data": data,
        }

    meta = obj(f"{store}-meta", "meta", {"epoch": "0", "owner": "", "shards": str(STATE_SHARDS)})
    shards = [obj(f"{store}-{i}", "shard", {"epoch": "0"}) for i in range(STATE_SHARDS)]
    return [meta, *shards]


SMBD_ACCOUNT = "hasmb-smbd"


def smbd_service_account(namespace: str) -> dict[str, Any]:
    """Shared by every SVM of the namespace (so not owned by one)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": SMBD_ACCOUNT, "namespace": namespace, "labels": dict(_COMMON)},
    }


def smbd_role_binding(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": SMBD_ACCOUNT, "namespace": namespace, "labels": dict(_COMMON)},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": SMBD_ACCOUNT,
        },
        "subjects": [{"kind": "ServiceAccount", "name": SMBD_ACCOUNT, "namespace": namespace}],
    }


def _pod_template(svm: SVM) -> dict[str, Any]:
    """The part of the pod that a change to requires a new pod (hashed)."""
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": svm.config_map_name}},
    ]
    if svm.volume.claim_name is not None:
        volumes.append(
            {"name": "export", "persistentVolumeClaim": {"claimName": svm.volume.claim_name}}
        )
    else:
        host = {"path": svm.volume.host_path, "type": "DirectoryOrCreate"}
        volumes.append({"name": "export", "hostPath": host})
    mounts: list[dict[str, Any]] = [
        # A directory mount (not subPath) so ConfigMap updates reach the running pod.
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "export", "mountPath": EXPORT_ROOT},
    ]
    for extra in svm.volumes:  # volume move targets (docs/volume-move.md)
        source: dict[str, Any] = (
            {"persistentVolumeClaim": {"claimName": extra.claim_name}}
            if extra.claim_name is not None
            else {"hostPath": {"path": extra.host_path, "type": "DirectoryOrCreate"}}
        )
        volumes.append({"name": f"vol-{extra.name}", **source})
        mounts.append({"name": f"vol-{extra.name}", "mountPath": volume_mount(extra.name)})
    if svm.users_secret:
        volumes.append({"name": "users", "secret": {"secretName": svm.users_secret}})
        mounts.append({"name": "users", "mountPath": USERS_DIR, "readOnly": True})

    def env_field(name: str, path: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    container = {
        "name": "smbd",
        "image": svm.image,
        "imagePullPolicy": svm.image_pull_policy,
        "command": ["hasmb-smbd", "--config", f"{CONFIG_DIR}/{CONFIG_KEY}"],
        "env": [
            env_field("HASMB_NODE", "spec.nodeName"),
            env_field("HASMB_POD_NAME", "metadata.name"),
            env_field("HASMB_NAMESPACE", "metadata.namespace"),
            {"name": "HASMB_SVM", "value": svm.meta.name},
            {"name": "HASMB_LEASE", "value": svm.lease_name},
            # where hasmb-smbd may move a share to (hasmb.smb.volume_move)
            {
                "name": "HASMB_VOLUMES",
                "value": ":".join([EXPORT_ROOT] + [volume_mount(v.name) for v in svm.volumes]),
            },
        ],
        "ports": [
            {"name": "smb", "containerPort": SMB_PORT, "protocol": "TCP"},
            {"name": "epmap", "containerPort": EPMAP_PORT, "protocol": "TCP"},
            {"name": "witness", "containerPort": WITNESS_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": ADMIN_PORT, "protocol": "TCP"},
            # the pair channel between the SVM's two pods (hasmb.smb.pair: fencing)
            {"name": "pair", "containerPort": PAIR_PORT, "protocol": "TCP"},
        ],
        # HTTP, not TCP: a frozen hasmb-smbd's kernel still accepts connections, so
        # only an answer tells that it serves; NotReady within about 3 s moves its LIF
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": 1,
            "timeoutSeconds": 1,
            "failureThreshold": 3,
        },
        "volumeMounts": mounts,
    }
    return {"serviceAccountName": SMBD_ACCOUNT, "containers": [container], "volumes": volumes}


def pod_hash(svm: SVM) -> str:
    return _hash(_pod_template(svm))


def pod(svm: SVM, node: str) -> dict[str, Any]:
    template = _pod_template(svm)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": svm.pod_name(node),
            "namespace": svm.meta.namespace,
            "labels": {**svm_labels(svm, "smbd", node), "app.kubernetes.io/name": "hasmb-smbd"},
            "annotations": {ANN_POD_HASH: _hash(template)},
            "ownerReferences": _svm_owner(svm),
        },
        "spec": {
            # Pinned: the pod belongs to this node of the pair and nowhere else.
            "nodeName": node,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 10,
            "enableServiceLinks": False,
            # The operator handles node failure itself (takeover); taint-based
            # eviction would only remove the standby it fails over to.
            "tolerations": [{"operator": "Exists"}],
            **template,
        },
    }


def service(lif: LIF, svm_name: str, node: str, state: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": lif.service_type,
        "selector": {LABEL_SVM: svm_name, LABEL_NODE: node},
        "ports": [
            {"name": "smb", "port": SMB_PORT, "targetPort": "smb", "protocol": "TCP"},
            {"name": "epmap", "port": EPMAP_PORT, "targetPort": "epmap", "protocol": "TCP"},
            {"name": "witness", "port": WITNESS_PORT, "targetPort": "witness", "protocol": "TCP"},
        ],
        "sessionAffinity": "None",
    }
    if lif.ip:
        spec["clusterIP"] = lif.ip
    if lif.external_ips:
        spec["externalIPs"] = list(lif.external_ips)
    if lif.load_balancer_ip:
        spec["loadBalancerIP"] = lif.load_balancer_ip
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": lif.service_name,
            "namespace": lif.meta.namespace,
            "labels": {
                **_COMMON,
                LABEL_SVM: svm_name,
                LABEL_LIF: lif.meta.name,
                LABEL_COMPONENT: "lif",
            },
            "annotations": {ANN_LIF_STATE: state},
            "ownerReferences": [owner_reference("LIF", lif.meta.name, lif.meta.uid)],
        },
        "spec": spec,
    }


def selector_patch(node: str, state: str) -> dict[str, Any]:
    """Moving a LIF: only the node key of the selector (and our annotation) change."""
    return {
        "metadata": {"annotations": {ANN_LIF_STATE: state}},
        "spec": {"selector": {LABEL_NODE: node}},
    }


def lease(
    svm: SVM,
    holder: str,
    epoch: int,
    reason: str,
    now: float,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ownership record, written whole (hasmb.contract.assign). `base` (the observed
    Lease) carries resourceVersion for the CAS; the same holder's term keeps its times
    and what the holder wrote with its renewals (fencing mode, handle count)."""
    return contract.assign(holder, epoch, reason, now, base).object(
        name=svm.lease_name,
        namespace=svm.meta.namespace,
        labels=svm_labels(svm, "ownership"),
        owner_references=_svm_owner(svm),
        base=base,
    )
