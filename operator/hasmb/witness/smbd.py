"""How hasmb-smbd starts its witness (issue 5): one call, duck-typed on the
server's config so this package does not depend on hasmb.smb.

    svc = witness_for_smbd(cfg, users, witness_listen=args.witness_listen)
    if svc is not None:
        await svc.start()      # ... await svc.stop() on shutdown

`cfg` needs `netname`, `listen` ("HOST:PORT" of the SMB server), `shares`
(objects with `.name`) and optionally `witness` (the `witness:` block as a
mapping or dataclass, see WitnessConfig.coerce).  The witness is off unless
`witness_listen` or `witness.listen` is set.  With no interfaces configured it
answers for `netname` at the SMB listen address (or the host's addresses when
that is a wildcard).  The SMB server should then advertise
SMB2_SHARE_CAP_CLUSTER on its CA shares.
"""

from __future__ import annotations

from collections.abc import Mapping

from hasmb.witness.config import WitnessConfig, split_host_port
from hasmb.witness.service import WitnessService, local_addresses


def witness_for_smbd(
    cfg: object, users: Mapping[str, str], witness_listen: str | None = None
) -> WitnessService | None:
    raw = getattr(cfg, "witness", None)
    configured = raw.get("listen") if isinstance(raw, Mapping) else getattr(raw, "listen", None)
    listen = witness_listen or configured
    if not listen:
        return None
    wcfg = WitnessConfig.coerce(raw) if raw is not None else WitnessConfig()
    wcfg.listen = str(listen)
    share_names = {str(getattr(s, "name", "")).lower() for s in getattr(cfg, "shares", [])}
    smb_host = split_host_port(str(getattr(cfg, "listen", "0.0.0.0:445")))[0]
    return WitnessService(
        wcfg,
        users,
        str(getattr(cfg, "netname", "HASMB")),
        share_exists=lambda name: name.lower() in share_names,
        default_addresses=local_addresses(smb_host),
    )
