"""A listening socket bound before the server starts: port 0 works, and the URL printed is the real one
(used by `store serve` and the dashboard)."""

from __future__ import annotations

import socket


def bind(host: str, port: int) -> tuple[socket.socket, str]:
    """A listening socket and its base URL, without a trailing slash (OSError when the address is taken
    or invalid). Connections wait in the backlog until the server runs, so the URL works at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return sock, f"http://{shown}:{bound}"
