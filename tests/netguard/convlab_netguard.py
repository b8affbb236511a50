"""Test-only network guard: allow loopback and Unix sockets, refuse every other connection and DNS lookup.

Installed for the pytest process by ``tests/conftest.py`` and for every notebook kernel that nbval starts through
``sitecustomize.py`` in this folder (the folder is put on the kernels' ``PYTHONPATH``). Never imported by convlab.
"""

from __future__ import annotations

import ipaddress
import socket

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
            raise NetworkBlockedError(f"network access blocked in tests: connect to {address!r}")

    def connect(self, address):
        _check(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        _check(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            raise NetworkBlockedError(f"network access blocked in tests: DNS lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    for fn in (connect, connect_ex, getaddrinfo):
        fn._convlab_netguard = True
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo
