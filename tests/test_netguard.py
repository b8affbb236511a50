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


def test_a_guarded_subprocess_counts_what_it_refused(tmp_path):
    """Servers started by the tests (JupyterLab) catch the refusal and only log it; the guard's log counts it."""
    import os
    import subprocess
    import sys

    import convlab_netguard

    log = tmp_path / "netguard.log"
    code = "import socket\ntry:\n    socket.create_connection(('192.0.2.1', 80), timeout=5)\nexcept OSError:\n    pass"
    env = dict(os.environ, **{convlab_netguard.LOG_ENV: str(log)})  # PYTHONPATH holds tests/netguard (the plugin)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    guard = convlab_netguard.read_log(log)
    assert len(guard.installed) == 1 and [pid for pid, _ in guard.blocked] == list(guard.installed)
    assert "192.0.2.1" in guard.blocked[0][1]
