"""Errors raised by handle-state stores."""

from __future__ import annotations


class StoreError(Exception):
    """The store failed an operation (I/O, protocol, malformed data)."""


class StaleEpochError(StoreError):
    """A write carried an epoch below the store's current one: the writer is fenced."""

    def __init__(self, mine: int, current: int) -> None:
        super().__init__(f"stale epoch {mine}: the store is at epoch {current}")
        self.mine = mine
        self.current = current


class StoreClosedError(StoreError):
    """The store object was closed."""


class NotOwnerError(StoreError):
    """A write was attempted before take_ownership()."""


class StoreFullError(StoreError):
    """The backend has no room left for the record."""


class StoreSpecError(ValueError):
    """A store specification string could not be parsed."""
