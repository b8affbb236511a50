"""Files that several processes share: an exclusive lock per key, and writes that are never seen half done.

The caches (``assets``, ``featcache``) live in one folder that any number of processes may use at once: two
notebooks, two ``python -m convlab train`` runs with the same ``--cache-dir``, or the nodes of a multi-node run
sharing a home folder. Two rules make that safe:

- **Writers take the key's lock** (:func:`file_lock`): an ``flock`` on a small lock file beside the data, so one
  process fills an entry while the others wait and then find it complete. The kernel drops the lock when its
  holder exits or is killed, so a crashed writer never blocks the next one. Linux NFS clients map ``flock`` onto
  NFS byte-range locks, which other machines see; a file system that cannot lock at all gets a warning.
- **Every file appears whole or not at all** (:func:`atomic_write`): it is written under a unique temporary name
  in the same folder and renamed over its target (``os.replace`` is atomic), so readers need no lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "file_lock", "LockBusyError"]

# Locks between the threads of one process. ``flock`` already excludes two open() calls of one process on a local
# disk, but an NFS client emulates it with POSIX locks, which belong to the whole process.
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()
# Errors of a file system that does not implement locks (some FUSE and old NFS mounts without a lock daemon).
_NO_LOCKING = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def _thread_lock(path: Path) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(os.path.abspath(path), threading.Lock())


class LockBusyError(OSError):
    """:func:`file_lock` with ``wait=False``: another process (or thread) holds the lock ``path``."""

    def __init__(self, path: Path):
        super().__init__(errno.EWOULDBLOCK, f"{path}: locked by another process")
        self.path = path


def _lock_fd(fd: int, wait: bool = True) -> bool:
    """Lock ``fd`` exclusively; with ``wait=False`` return False at once if another holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: lock the first byte; LK_LOCK retries for ~10 s, so keep asking
        import msvcrt

        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
                return True
            except OSError as exc:
                if exc.errno not in (errno.EDEADLOCK, errno.EACCES):
                    raise
                if not wait:
                    return False
    else:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive inter-process lock named by the file ``path`` (created if missing; its folder too).

    ``wait=True`` blocks until the lock is free: the holder is filling the entry that the caller wants, so waiting
    for it is the right thing to do. ``wait=False`` raises :class:`LockBusyError` at once instead (two runs that
    would write the same files: the second must refuse, not follow).

    The kernel drops the lock when its holder exits or is killed, so a lock file left by a dead process is simply
    taken by the next caller. Not re-entrant: do not take the same lock twice in one thread. The lock file is left
    in place (deleting it could let two processes lock two different files of the same name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    thread_lock = _thread_lock(path)
    if not thread_lock.acquire(blocking=wait):
        raise LockBusyError(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                if not _lock_fd(fd, wait):
                    raise LockBusyError(path)
            except OSError as exc:
                if isinstance(exc, LockBusyError) or exc.errno not in _NO_LOCKING:
                    raise
                warnings.warn(
                    f"{path}: this file system cannot lock files ({exc}); processes that write the same "
                    "cache entry at the same time may repeat each other's work",
                    RuntimeWarning,
                    stacklevel=3,
                )
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
    finally:
        thread_lock.release()


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only be read by setting it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A uniquely named empty temporary file in ``path``'s folder for the block to fill (``.<name>.<random><suffix>``).

    When the block ends normally the file is renamed over ``path``; when it raises (e.g. a check of the new bytes
    fails), the file is removed and ``path`` is left as it was. Readers see the old file or the complete new one,
    never a part; concurrent writers never share a temporary file.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    tmp = Path(name)
    try:
        # mkstemp's 0600 would make the result private; open() honours the umask. A file system that refuses
        # chmod (some network or FUSE mounts) keeps mkstemp's mode rather than failing the write.
        with contextlib.suppress(OSError, AttributeError):
            os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object], fsync: bool = True) -> None:
    """Call ``write(f)`` on a temporary file in ``path``'s folder, then rename it over ``path`` (:func:`atomic_path`).

    ``fsync`` makes the bytes durable before the rename (a power cut then cannot leave a renamed but empty file);
    skip it for files whose damage is detected anyway.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda f: f.write(data), fsync)
