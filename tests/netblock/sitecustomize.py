"""Blocks network connections in subprocesses the tests start (put this folder on PYTHONPATH).

pytest-socket guards the test process itself; the stages the end-to-end tests run (dvc,
python -m pipeline.*) are separate processes, so this module refuses any TCP/UDP connection
there too. Unix sockets and loopback stay allowed. A blocked attempt raises and is recorded on stderr.
"""

import socket
import sys

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _loopback(address: object) -> bool:
    host = address[0] if isinstance(address, tuple) and address else ""
    return isinstance(host, str) and (host.startswith("127.") or host in ("::1", "localhost"))


def _guard(sock: socket.socket, address: object) -> None:
    # Loopback stays open: it is this machine (torch.distributed's rendezvous, a local MLflow
    # server), not the network.
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
        print(f"govtune-netblock: blocked connection to {address!r}", file=sys.stderr)
        raise OSError(f"network access blocked in tests: {address!r}")


def _connect(self: socket.socket, address: object) -> None:
    _guard(self, address)
    return _real_connect(self, address)


def _connect_ex(self: socket.socket, address: object) -> int:
    _guard(self, address)
    return _real_connect_ex(self, address)


socket.socket.connect = _connect  # type: ignore[method-assign]
socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
