"""The test session cannot reach the network, but loopback works (nbval's kernels need it)."""

import socket
import urllib.request

import pytest


def test_public_connection_is_blocked():
    with pytest.raises(OSError, match="blocked"):
        urllib.request.urlopen("https://download.pytorch.org/models/mobilenet_v2-b0353104.pth", timeout=5)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(OSError, match="blocked"):
        s.connect(("1.1.1.1", 443))
    s.close()


def test_loopback_is_allowed():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=5)
    conn, _ = server.accept()
    client.sendall(b"ok")
    assert conn.recv(2) == b"ok"
    for s in (client, conn, server):
        s.close()
