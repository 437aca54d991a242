"""hasmb.podrt -- hasmb-smbd as a citizen of the operator's pods (`hasmb-smbd --kube`).

The operator renders what a pod gets (docs/operator.md): the config ConfigMap
mounted at /etc/hasmb/config, users at /etc/hasmb/users, the env
HASMB_NODE/HASMB_SVM/HASMB_LEASE/HASMB_NAMESPACE/HASMB_POD_NAME and the
ServiceAccount hasmb-smbd. This package is the data-plane side of that contract:

- env.py       the pod's identity from the environment
- lease.py     the ownership Lease: parsing, watching, renewal with a
               resourceVersion CAS and the monotonic-clock self-fence deadline
- peers.py     the partner pods' addresses (for forwarding to the owner)
- shares.py    applying share changes of the ConfigMap to a running server
- witness.py   the witness next to the SMB server (standalone and in a pod)
- runtime.py   the role loop: owner while the Lease names this node, forwarding
               standby otherwise; warm takeover, clean handover, self-fencing
"""
