"""A TCP forwarder on 127.0.0.1 that counts what passes, to see how a process uses a dependency.

`forward`: every connection is relayed to the target; `hang`: connections are accepted and never
answered (a dependency that stopped responding). Runs on the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class TcpCounter:
    target_port: int
    mode: str = "forward"  # or "hang"
    connections: int = 0  # accepted so far
    open_now: int = 0
    most_open: int = 0  # the most connections open at once
    received: bytearray = field(default_factory=bytearray)  # everything clients sent
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def reset(self, mode: str | None = None) -> None:
        """Zero the counts; a change of mode also drops the connections open now (a client's
        kept-alive connection would otherwise go on in the old mode)."""
        if mode is not None and mode != self.mode:
            for task in list(self._tasks):
                task.cancel()
            self.mode = mode
        self.connections = self.most_open = 0
        self.received.clear()

    async def start(self) -> TcpCounter:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            if self.mode == "hang":
                while chunk := await reader.read(65536):  # until the client gives up
                    self.received += chunk
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(self._pipe(reader, up_writer, record=True), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_now -= 1
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, record: bool = False
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                if record:
                    self.received += chunk
                writer.write(chunk)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()
