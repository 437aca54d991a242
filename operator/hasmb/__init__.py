"""hasmb: highly available SMB3 file service for Kubernetes."""

__version__ = "0.1.0"
