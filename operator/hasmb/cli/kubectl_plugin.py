"""Console script `kubectl-hasmb` (run as `kubectl hasmb ...`): thin wrappers over spec patches.

Every command is one merge patch of a declarative field, exactly what
`kubectl patch` would do, so the operator never depends on the plugin:

    status                      pairs, SVMs and LIFs: where is everything, is it healthy
    takeover NODE               HAPair spec.takeover = NODE (its partner serves everything)
    giveback NODE               HAPair spec.takeover cleared
    relocate SVM [--to NODE]    SVM spec.relocateTo = the partner of its current owner (ARL)
    lif migrate LIF NODE        LIF spec.migrateTo = NODE
    lif revert LIF              LIF spec.migrateTo cleared
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hasmb.kube.client import HAPAIRS, LIFS, SVMS, ApiError, KubeClient


class PluginError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubectl hasmb", description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--namespace", default=None, help="namespace (default: the context's)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="status/takeover: all")
    p.add_argument("--kubeconfig", default=None)
    p.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="wait until the move is done"
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("status", help="pairs, SVMs and LIFs with their state")
    for name in ("takeover", "giveback"):
        sp = sub.add_parser(name, help=f"planned {name} of NODE")
        sp.add_argument("node")
    sp = sub.add_parser("relocate", help="move an SVM's ownership to the partner node (ARL)")
    sp.add_argument("svm")
    sp.add_argument("--to", default=None, help="target node (default: the partner)")
    lif = sub.add_parser("lif", help="LIF migrate / revert").add_subparsers(
        dest="lifcmd", required=True
    )
    sp = lif.add_parser("migrate", help="move a LIF to NODE")
    sp.add_argument("lif")
    sp.add_argument("node")
    sp = lif.add_parser("revert", help="send a LIF back to its home node")
    sp.add_argument("lif")
    return p


def _default_namespace(kubeconfig: str | None) -> str:
    from kubernetes_asyncio.config import kube_config

    try:
        loader = kube_config._get_kube_config_loader_for_yaml_file(
            kubeconfig or kube_config.KUBE_CONFIG_DEFAULT_LOCATION
        )
        context: Any = loader.current_context
        ns = context["context"].get("namespace")
    except Exception:
        return "default"
    return str(ns) if ns else "default"


def _cond(obj: dict[str, Any], type_: str) -> str:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return str(c.get("status"))
    return "-"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


async def _status(kube: KubeClient, ns: str | None) -> str:
    pairs = await kube.list(HAPAIRS, ns)
    svms = await kube.list(SVMS, ns)
    lifs = await kube.list(LIFS, ns)
    out = []
    rows = [["NAMESPACE", "HAPAIR", "NODES", "STATE", "TAKEOVER", "NODE STATES"]]
    for p in pairs:
        st = p.get("status") or {}
        nodes = ",".join((p.get("spec") or {}).get("nodes") or [])
        per = " ".join(f"{n.get('name')}={n.get('state')}" for n in st.get("nodes") or [])
        md = p["metadata"]
        rows.append(
            [
                md["namespace"],
                md["name"],
                nodes,
                st.get("state", "-"),
                st.get("takeover") or "-",
                per or "-",
            ]
        )
    out.append(_table(rows))
    rows = [["NAMESPACE", "SVM", "PAIR", "HOME", "CURRENT", "EPOCH", "READY", "REASON", "HANDLES"]]
    for s in svms:
        st, sp, md = s.get("status") or {}, s.get("spec") or {}, s["metadata"]
        rows.append(
            [
                md["namespace"],
                md["name"],
                sp.get("haPair", "-"),
                sp.get("homeNode", "-"),
                st.get("currentNode") or "-",
                str(st.get("epoch", "-")),
                _cond(s, "Ready"),
                st.get("ownerReason") or "-",
                str(st.get("persistentHandles", 0)),
            ]
        )
    out.append(_table(rows))
    rows = [["NAMESPACE", "LIF", "SVM", "IP", "HOME", "CURRENT", "STATE", "READY"]]
    for lf in lifs:
        st, sp, md = lf.get("status") or {}, lf.get("spec") or {}, lf["metadata"]
        rows.append(
            [
                md["namespace"],
                md["name"],
                sp.get("svm", "-"),
                st.get("ip") or "-",
                sp.get("homeNode", "-"),
                st.get("currentNode") or "-",
                st.get("state") or "-",
                _cond(lf, "Ready"),
            ]
        )
    out.append(_table(rows))
    return "\n\n".join(out)


async def _pair_of(kube: KubeClient, ns: str | None, node: str) -> dict[str, Any]:
    pairs = [
        p
        for p in await kube.list(HAPAIRS, ns)
        if node in ((p.get("spec") or {}).get("nodes") or [])
    ]
    if not pairs:
        raise PluginError(f"no HAPair has node {node!r}" + (f" in namespace {ns}" if ns else ""))
    if len(pairs) > 1:
        names = ", ".join(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pairs)
        raise PluginError(f"node {node!r} is in several HAPairs ({names}): pass -n NAMESPACE")
    return pairs[0]


async def _wait(deadline: float, check: Callable[[], Awaitable[bool]], what: str) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise PluginError(f"timed out after {deadline:g}s waiting for {what}")


async def _run(args: argparse.Namespace) -> str:
    ns_all = (
        None if args.all_namespaces else (args.namespace or _default_namespace(args.kubeconfig))
    )
    ns = args.namespace or _default_namespace(args.kubeconfig)
    async with await KubeClient.connect(args.kubeconfig) as kube:
        if args.cmd == "status":
            return await _status(kube, ns_all)
        if args.cmd in ("takeover", "giveback"):
            pair = await _pair_of(kube, ns_all, args.node)
            md = pair["metadata"]
            value = args.node if args.cmd == "takeover" else None
            if args.cmd == "giveback" and (pair.get("spec") or {}).get("takeover") not in (
                None,
                "",
                args.node,
            ):
                raise PluginError(f"{args.node} is not taken over in HAPair {md['name']}")
            await kube.patch(HAPAIRS, md["namespace"], md["name"], {"spec": {"takeover": value}})
            if args.wait:

                async def settled() -> bool:
                    st = (await kube.get(HAPAIRS, md["namespace"], md["name"])).get("status") or {}
                    ok = [c for c in st.get("conditions") or [] if c.get("type") == "Progressing"]
                    moved = bool(st.get("takeover")) == (value is not None)
                    return moved and bool(ok) and ok[0].get("status") == "False"

                await _wait(args.wait, settled, f"{args.cmd} of {args.node}")
            return f"hapair.hasmb.io/{md['name']} {args.cmd} {args.node} requested"
        if args.cmd == "relocate":
            svm = await kube.get(SVMS, ns, args.svm)
            sp, st = svm.get("spec") or {}, svm.get("status") or {}
            pair = await kube.get(HAPAIRS, ns, sp["haPair"])
            nodes = (pair.get("spec") or {}).get("nodes") or []
            current = st.get("currentNode") or sp.get("relocateTo") or sp["homeNode"]
            target = args.to or next((n for n in nodes if n != current), None)
            if target not in nodes:
                raise PluginError(
                    f"{target!r} is not a node of HAPair {sp['haPair']} ({', '.join(nodes)})"
                )
            # Relocating home clears the field: the spec then says "at home".
            value = None if target == sp["homeNode"] else target
            await kube.patch(SVMS, ns, args.svm, {"spec": {"relocateTo": value}})
            if args.wait:

                async def owned() -> bool:
                    status = (await kube.get(SVMS, ns, args.svm)).get("status") or {}
                    return bool(status.get("currentNode") == target)

                await _wait(args.wait, owned, f"{args.svm} to be owned by {target}")
            return f"svm.hasmb.io/{args.svm} relocating to {target}"
        if args.cmd == "lif":
            lif = await kube.get(LIFS, ns, args.lif)
            home = (lif.get("spec") or {}).get("homeNode")
            target = home if args.lifcmd == "revert" else args.node
            value = None if args.lifcmd == "revert" else args.node
            await kube.patch(LIFS, ns, args.lif, {"spec": {"migrateTo": value}})
            if args.wait:

                async def moved() -> bool:
                    status = (await kube.get(LIFS, ns, args.lif)).get("status") or {}
                    return bool(status.get("currentNode") == target)

                await _wait(args.wait, moved, f"{args.lif} on {target}")
            verb = "reverting to" if args.lifcmd == "revert" else "migrating to"
            return f"lif.hasmb.io/{args.lif} {verb} {target}"
    raise PluginError(f"unknown command {args.cmd}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        print(asyncio.run(_run(args)))
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"error: {exc.message or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
