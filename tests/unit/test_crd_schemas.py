"""The CRDs are structural, documented and consistent with their printer columns."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = sorted((ROOT / "crds").glob("hasmb.io_*.yaml"))
EXPECTED = {
    "HAPair": ("hapairs", {"hap", "pair"}),
    "SVM": ("svms", {"svm"}),
    "Share": ("shares", {"shr"}),
    "LIF": ("lifs", {"lif"}),
}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, sub in (schema.get("properties") or {}).items():
        out += walk(sub, f"{path}.{name}")
    if "items" in schema:
        out += walk(schema["items"], f"{path}[]")
    return out


def test_all_four_kinds_exist_with_names_and_category() -> None:
    kinds = {}
    for path in CRDS:
        crd = load(path)
        names = crd["spec"]["names"]
        kinds[names["kind"]] = (names["plural"], set(names["shortNames"]))
        assert crd["spec"]["group"] == "hasmb.io"
        assert names["categories"] == ["hasmb"]
        assert crd["metadata"]["name"] == f"{names['plural']}.hasmb.io"
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}
    assert kinds == EXPECTED


@pytest.mark.parametrize("path", CRDS, ids=lambda p: p.stem)
def test_schema_is_structural_and_explained(path: Path) -> None:
    schema = load(path)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for where, node in walk(schema):
        if where == ".metadata":
            continue
        assert "type" in node, f"{path.name}{where} has no type"
        assert node.get("description"), f"{path.name}{where} has no description (kubectl explain)"
    status = schema["properties"]["status"]
    # kopf may keep its own bookkeeping in status: it must not be pruned.
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    conds = status["properties"]["conditions"]
    assert conds["x-kubernetes-list-map-keys"] == ["type"]
    assert "observedGeneration" in conds["items"]["properties"]


@pytest.mark.parametrize("path", CRDS, ids=lambda p: p.stem)
def test_printer_columns_point_at_schema_fields(path: Path) -> None:
    version = load(path)["spec"]["versions"][0]
    paths = {where for where, _ in walk(version["schema"]["openAPIV3Schema"])}
    for col in version["additionalPrinterColumns"]:
        jp = col["jsonPath"]
        if jp == ".metadata.creationTimestamp":
            continue
        field = re.sub(r"\[[^\]]*\]", "[]", jp)
        assert field in paths or field.replace("[]", "") in paths, f"{col['name']}: {jp}"


def test_dependent_fields_have_cel_rules_with_messages() -> None:
    rules = {}
    for path in CRDS:
        crd = load(path)
        for _, node in walk(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]):
            for rule in node.get("x-kubernetes-validations") or []:
                assert rule.get("message"), rule
                rules[rule["rule"]] = crd["spec"]["names"]["kind"]
    kinds = set(rules.values())
    assert {"HAPair", "SVM", "Share", "LIF"} <= kinds
    assert any("'..'" in r or "[.][.]" in r for r in rules)


def test_samples_are_one_complete_ha_setup() -> None:
    docs = []
    for path in sorted((ROOT / "manifests" / "samples").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    (pair,) = by_kind["HAPair"]
    (svm,) = by_kind["SVM"]
    assert len(pair["spec"]["nodes"]) == 2
    assert svm["spec"]["usersSecret"] == by_kind["Secret"][0]["metadata"]["name"]
    assert sorted(s["spec"].get("continuouslyAvailable", False) for s in by_kind["Share"]) == [
        False,
        True,
    ]
    assert sorted(lif["spec"]["homeNode"] for lif in by_kind["LIF"]) == sorted(
        pair["spec"]["nodes"]
    )


def test_rbac_is_least_privilege() -> None:
    docs = list(yaml.safe_load_all((ROOT / "manifests" / "rbac.yaml").read_text()))
    role = next(
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "hasmb-operator"
    )
    bind = next(r for r in role["rules"] if "bind" in r["verbs"])
    assert bind["resourceNames"] == ["hasmb-smbd"]  # it may grant its pods nothing else
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "deletecollection" not in rule["verbs"]
    node_rule = next(r for r in role["rules"] if "nodes" in r["resources"])
    assert set(node_rule["verbs"]) == {"get", "list", "watch"}
