"""A TCP proxy in front of the test S3 server that can go down and come back on the same port: a storage outage.

Why a proxy rather than stopping moto: moto keeps its objects in memory (a restart loses them), and ``kill -STOP``
only makes requests hang. Going down here is what a client sees when an endpoint restarts: open connections are
reset and new ones are refused; after ``up()`` the same address answers again with the same data.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
from urllib.parse import urlsplit

from tests.helpers import free_port

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST instead of FIN


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` (``http://host:port``), one thread per connection."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.port = free_port()
        self.connections = 0  # accepted so far (a test can check that traffic went through the proxy)
        self._down = threading.Event()  # set while down: pipes reset their connections
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._pipes: set[threading.Thread] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        """Listen (again) on the same port."""
        self._down.clear()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        sock.settimeout(0.1)
        self._listener = sock
        self._accepting = threading.Thread(target=self._accept, args=(sock,), name="s3proxy-accept", daemon=True)
        self._accepting.start()

    def down(self) -> None:
        """Stop accepting (new connections are refused) and reset every open connection."""
        self._down.set()
        if self._accepting is not None:
            self._accepting.join()
        self._accepting = None
        for pipe in list(self._pipes):  # every open connection is reset before down() returns
            pipe.join(timeout=10)

    @property
    def is_down(self) -> bool:
        """True once ``down()`` has finished: connections reset, the port refuses."""
        return self._down.is_set() and self._accepting is None

    def outage(self, seconds: float) -> None:
        """Down for ``seconds``, then up again (run it in a thread to cut storage off mid-read)."""
        self.down()
        time.sleep(seconds)
        self.up()

    def close(self) -> None:
        self.down()

    def _accept(self, listener: socket.socket) -> None:
        try:
            while not self._down.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                self.connections += 1
                pipe = threading.Thread(target=self._pipe, args=(client,), name="s3proxy-pipe", daemon=True)
                self._pipes.add(pipe)
                pipe.start()
        finally:
            listener.close()  # from now on connect() is refused

    def _pipe(self, client: socket.socket) -> None:
        try:
            self._forward(client)
        finally:
            self._pipes.discard(threading.current_thread())

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            client.close()
            return
        peer = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as sel:
            for sock in peer:
                sock.settimeout(5)
                sel.register(sock, selectors.EVENT_READ)
            try:
                while not self._down.is_set():
                    for key, _ in sel.select(0.05):
                        src: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = src.recv(1 << 16)
                        if not data:
                            return
                        peer[src].sendall(data)
            except OSError:
                return
            finally:
                for sock in peer:
                    if self._down.is_set():
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                    sock.close()
