"""Shared exit path for console scripts whose implementation has not landed yet."""

import sys


def not_implemented(name: str, issue: str) -> int:
    print(f"{name}: not implemented yet (tracked in {issue})", file=sys.stderr)
    return 2
