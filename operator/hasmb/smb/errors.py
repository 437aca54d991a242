"""The exception a command handler raises to answer with an error status."""

from __future__ import annotations

from hasmb.smb.constants import Status


class SmbError(Exception):
    """Answer the current request with `status` (and an optional error body)."""

    def __init__(self, status: int, message: str = "", data: bytes = b"") -> None:
        super().__init__(message or _name(status))
        self.status = status
        self.data = data


def _name(status: int) -> str:
    try:
        return Status(status).name
    except ValueError:
        return f"0x{status:08x}"


def errno_to_status(err: OSError) -> int:
    """Map a filesystem error to the NTSTATUS a Windows server would return."""
    import errno

    return {
        errno.ENOENT: Status.OBJECT_NAME_NOT_FOUND,
        errno.ENOTDIR: Status.OBJECT_PATH_NOT_FOUND,
        errno.EEXIST: Status.OBJECT_NAME_COLLISION,
        errno.EACCES: Status.ACCESS_DENIED,
        errno.EPERM: Status.ACCESS_DENIED,
        errno.EROFS: Status.MEDIA_WRITE_PROTECTED,
        errno.ENOSPC: Status.DISK_FULL,
        errno.EDQUOT: Status.DISK_FULL,
        errno.EISDIR: Status.FILE_IS_A_DIRECTORY,
        errno.ENOTEMPTY: Status.DIRECTORY_NOT_EMPTY,
        errno.ENAMETOOLONG: Status.NAME_TOO_LONG,
        errno.EXDEV: Status.NOT_SAME_DEVICE,
        errno.ELOOP: Status.ACCESS_DENIED,
        errno.EFBIG: Status.DISK_FULL,
        errno.EINVAL: Status.INVALID_PARAMETER,
        errno.EBADF: Status.INVALID_HANDLE,
        errno.EOPNOTSUPP: Status.NOT_SUPPORTED,
    }.get(err.errno or 0, Status.UNSUCCESSFUL)
