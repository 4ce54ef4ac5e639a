"""A TCP proxy on 127.0.0.1 passing bytes each way at a set rate per connection: a slow link in front
of a server, so that a large transfer is still under way when a test injects a fault. Small
requests pass at once; only a connection's bulk is slowed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

CHUNK = 16 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: int) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(len(data) / rate)
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@contextmanager
def throttled(url: str, bytes_per_second: int) -> Iterator[str]:
    """`url` (http://host:port) behind the proxy; yields the proxy's URL."""
    target = urlsplit(url)
    loop = asyncio.new_event_loop()
    listening: list[asyncio.Server] = []
    writers: set[asyncio.StreamWriter] = set()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        writers.add(client_writer)
        try:
            server_reader, server_writer = await asyncio.open_connection(target.hostname, target.port)
        except OSError:
            client_writer.close()
            return
        writers.add(server_writer)
        await asyncio.gather(
            _pipe(client_reader, server_writer, bytes_per_second),
            _pipe(server_reader, client_writer, bytes_per_second),
        )

    async def serve() -> None:
        listening.append(await asyncio.start_server(handle, "127.0.0.1", 0))

    async def shut() -> None:
        listening[0].close()
        for writer in writers:
            writer.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await listening[0].wait_closed()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(timeout=10)
    port = listening[0].sockets[0].getsockname()[1]
    try:
        yield f"{target.scheme}://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
