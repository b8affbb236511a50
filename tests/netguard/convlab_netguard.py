"""Test-only network guard: allow loopback and Unix sockets, refuse every other connection and DNS lookup.

Installed for the pytest process by ``tests/conftest.py`` and, through ``sitecustomize.py`` in this folder (the
folder is put on ``PYTHONPATH``), for every Python process the tests start: nbval's kernels, and the JupyterLab
servers of the browser and ``convlab open`` tests with their kernels. Never imported by convlab.

A refused attempt raises :class:`NetworkBlockedError` in the process that made it, where a server may catch it and
only log it. So with ``CONVLAB_NETGUARD_LOG=FILE`` in its environment every guarded process also appends a line to
``FILE``: ``installed <pid>`` when the guard is installed, ``blocked <pid> <what>`` for each attempt it refused.
:func:`read_log` reads it back, and a test asserts that the server's process was guarded and that nothing was
blocked.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

LOG_ENV = "CONVLAB_NETGUARD_LOG"

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


class NetworkBlockedError(OSError):
    """A test tried to reach beyond loopback."""


def _is_loopback(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host).strip("[]")
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _log(line: str) -> None:
    """Append ``line`` to ``$CONVLAB_NETGUARD_LOG`` if set (one ``write`` of a short line in append mode: the lines
    of concurrent processes do not interleave)."""
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line.replace("\n", " ") + "\n")


@dataclass
class GuardLog:
    """What the processes that share one ``CONVLAB_NETGUARD_LOG`` file said: the guarded process ids, and every
    refused attempt (``(pid, what)``)."""

    installed: set[int] = field(default_factory=set)
    blocked: list[tuple[int, str]] = field(default_factory=list)


def read_log(path: str | os.PathLike) -> GuardLog:
    """The lines written under ``CONVLAB_NETGUARD_LOG=path`` (an empty log if the file does not exist)."""
    log = GuardLog()
    text = Path(path).read_text(encoding="utf-8") if Path(path).exists() else ""
    for line in text.splitlines():
        kind, pid, *what = line.split(" ", 2)
        if kind == "installed":
            log.installed.add(int(pid))
        elif kind == "blocked":
            log.blocked.append((int(pid), what[0] if what else ""))
    return log


def installed() -> bool:
    return getattr(socket.socket.connect, "_convlab_netguard", False) and getattr(
        socket.getaddrinfo, "_convlab_netguard", False
    )


def install() -> None:
    """Guard ``socket.socket.connect``/``connect_ex`` and ``socket.getaddrinfo``; a no-op if already guarded."""
    if installed():
        return
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def _check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            _log(f"blocked {os.getpid()} connect to {address!r} ({' '.join(sys.argv)[:200]})")
            raise NetworkBlockedError(f"network access blocked in tests: connect to {address!r}")

    def connect(self, address):
        _check(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        _check(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            _log(f"blocked {os.getpid()} DNS lookup of {host!r} ({' '.join(sys.argv)[:200]})")
            raise NetworkBlockedError(f"network access blocked in tests: DNS lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    for fn in (connect, connect_ex, getaddrinfo):
        fn._convlab_netguard = True
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo
    _log(f"installed {os.getpid()}")
