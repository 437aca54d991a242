"""hasmb.kube."""
