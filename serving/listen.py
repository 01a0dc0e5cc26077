"""Listening sockets and uvicorn (torch-free: the web demo proxy uses it too).

    sock = bind("127.0.0.1", 6006)         # a busy port or an unknown host fails here, in one line
    run(app, sock)                          # until SIGINT / SIGTERM (uvicorn's handlers)
    running = start_in_thread(app)          # a notebook or a test: a free port, a background thread
    running.url                             # http://127.0.0.1:PORT ; running.stop() shuts it down
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); OSError (one line: address in use, unknown host) if it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise OSError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise OSError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None
    sock.set_inheritable(True)
    return sock


def uvicorn_server(app, *, log_level: str = "info"):
    import uvicorn

    cfg = uvicorn.Config(app, log_level=log_level, access_log=log_level in ("info", "debug"),
                         timeout_graceful_shutdown=5, lifespan="on")
    return uvicorn.Server(cfg)


def run(app, sock: socket.socket, *, log_level: str = "info") -> None:
    """Serve on `sock` until SIGINT / SIGTERM (uvicorn's handlers), then stop the engine."""
    uvicorn_server(app, log_level=log_level).run(sockets=[sock])


@dataclass
class RunningServer:
    url: str  # http://host:port (the API is under /v1)
    server: object  # the uvicorn.Server
    thread: threading.Thread
    sock: socket.socket

    def stop(self, timeout: float = 15.0) -> None:
        """Shut down (open streams get uvicorn's graceful timeout), stop the engine, close the socket."""
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()


def start_in_thread(app, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning",
                    timeout: float = 30.0) -> RunningServer:
    """Serve `app` from a background thread (port 0: a free one); returns once it accepts connections."""
    sock = bind(host, port)
    server = uvicorn_server(app, log_level=log_level)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="parallelmind-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    h, p = sock.getsockname()[:2]
    return RunningServer(f"http://{h}:{p}", server, thread, sock)
