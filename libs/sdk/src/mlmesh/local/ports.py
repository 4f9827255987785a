"""Free-port discovery and port checks on the loopback interface."""

from __future__ import annotations

import socket

from mlmesh.local.errors import InfraError


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free right now (another process may still take it before we bind)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports: all sockets stay open until the end so none is handed out twice."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def check_port_free(port: int, host: str = "127.0.0.1", what: str = "") -> None:
    """Raise InfraError when `port` cannot be bound on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR like the servers themselves, so a TIME_WAIT leftover is not "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            label = f" ({what})" if what else ""
            raise InfraError(
                f"port {port}{label} is already in use on {host} ({exc.strerror}): "
                "stop the process holding it or choose another port"
            ) from None
