"""Run a server in a network namespace of its own, reachable only through 127.0.0.1:PORT here.

The Temporal time-skipping test server listens on every interface and has no flag to bind loopback
only. Started through this program, it runs in a fresh network namespace holding nothing but its
own loopback, so no other machine (and no other namespace) can reach it; this process listens on
127.0.0.1:PORT in the caller's namespace and forwards each connection to the same port inside,
through a socket created in the server's namespace (setns(2) on a thread that only dials).

    python tests/workflows/isolated_server.py SERVER PORT [ARGS...]   # runs `SERVER PORT ARGS...`

Needs CAP_SYS_ADMIN (root) for the namespace. The server gets SIGKILL when this process dies,
however it dies, and this process exits when the server does. Standard library only: the Temporal
SDK runs it as the "server binary" it was given.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
_libc = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded before any fork


def _into_new_namespace() -> None:
    """In the child, before exec: a new network namespace with its loopback up; die with the parent."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        os.write(
            2, f"isolated_server: unshare(CLONE_NEWNET) failed: {os.strerror(err)} (needs root)\n".encode()
        )
        os._exit(126)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _enter_namespace_of(pid: int) -> None:
    """Thread initializer: this thread's sockets are made in the network namespace of `pid`."""
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")
    finally:
        os.close(fd)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(server: subprocess.Popen[bytes], port: int) -> int:
    loop = asyncio.get_running_loop()
    dialer = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, initializer=_enter_namespace_of, initargs=(server.pid,)
    )

    def dial() -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=5)

    async def forward(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            inner = await loop.run_in_executor(dialer, dial)
        except OSError:  # not listening yet: the caller retries
            client_w.close()
            return
        inner.setblocking(False)
        inner_r, inner_w = await asyncio.open_connection(sock=inner)
        await asyncio.gather(_pipe(client_r, inner_w), _pipe(inner_r, client_w))

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    listener = await asyncio.start_server(forward, "127.0.0.1", port)
    exited = loop.run_in_executor(None, server.wait)
    exited.add_done_callback(lambda _: stop.set())
    await stop.wait()
    listener.close()
    if server.poll() is None:
        server.kill()
    code = await exited
    dialer.shutdown(wait=False)
    return code if code >= 0 else 128 - code


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary, port = argv[0], int(argv[1])
    server = subprocess.Popen([binary, *argv[1:]], preexec_fn=_into_new_namespace)  # noqa: PLW1509
    return asyncio.run(serve(server, port))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
