"""hasmb.smb: the asyncio SMB 2.0.2-3.1.1 server behind `hasmb-smbd`.

Module map (one job each):

- transport and protocol core: `server` (connections, framing, decryption,
  signature checks, dispatch, compounding, credits, async/interim responses,
  CANCEL), `request` (per-request context, handler and FSCTL registries),
  `header` (SMB2 and transform headers), `crypto` (SP800-108 KDF, HMAC-SHA256 /
  AES-CMAC / AES-GMAC signing, AES-128/256-CCM/GCM), `constants`, `errors`.
- commands: `negotiate` (+ 3.1.1 contexts, SMB1 upgrade), `session_setup`
  (NTLMv2 over SPNEGO via hasmb.auth, LOGOFF), `tree`, `create` (CREATE/CLOSE,
  share modes, delete-on-close, create contexts, IPC$ pipes via hasmb.rpc.pipes),
  `fileio` (READ/WRITE/FLUSH), `directory` (QUERY_DIRECTORY), `query`
  (QUERY_INFO), `setinfo` (SET_INFO), `lock` (LOCK), `ioctl` (IOCTL dispatch,
  validate-negotiate, network interfaces, pipe transceive, resiliency),
  `fsctl_data` (copy-chunk, resume key, sparse files), `notify` (CHANGE_NOTIFY),
  `oplock` (oplocks, leases v1/v2, breaks, OPLOCK_BREAK acks).
- state and policy: `state` (Connection, Session, TreeConnect, Open, FileNode,
  Lease, GlobalState = the global open table by persistent FileId and
  CreateGuid), `paths` (the share jail), `fileinfo` (FILETIMEs, DOS attributes
  kept in the `user.hasmb.*` xattrs, MS-FSCC structures), `config` (contract 3).

How to add or replace a command or FSCTL: see the docstring of `server`.
"""
