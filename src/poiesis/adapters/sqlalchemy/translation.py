"""Where SQLAlchemy's errors become the port's: "the database cannot serve now" is StoreUnavailable
(retry later), a connection broken under a statement ConnectionLost (try once more), anything else
stays a fault; `postgres.errors` reads asyncpg's the same way. And writes that run to their end
even when their caller is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from poiesis.adapters.postgres.errors import UNAVAILABLE_SQLSTATE_CLASSES, ConnectionLost, unavailable_reason
from poiesis.domain.errors import Conflict
from poiesis.ports.store import StoreUnavailable

__all__ = [
    "ConnectionLost",
    "Translated",
    "once_more_if_lost",
    "translating",
    "unavailable_reason",
    "uninterrupted",
]

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

_UNAVAILABLE = (OperationalError, InterfaceError, sa.exc.TimeoutError)


def is_unavailable(exc: sa.exc.SQLAlchemyError) -> bool:
    """Whether `exc` says the database cannot be reached or cannot serve now (retry later), as
    opposed to a fault in the request."""
    if isinstance(exc, _UNAVAILABLE):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(sqlstate, str) and sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
    return False


def once_more_if_lost(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Run a read once more when its pooled connection turned out to be broken."""

    @functools.wraps(method)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except ConnectionLost as exc:
            log.info("a pooled connection was broken (%s): trying once more", exc)
            return await method(*args, **kwargs)

    return run


class Translated:
    """An engine whose connections turn the driver's errors into the port's, the one place that
    does: "the database is unreachable" into StoreUnavailable, and a unique key already taken into
    Conflict with the message the transaction was opened with."""

    def __init__(self, engine: AsyncEngine, *, autocommit: bool = False) -> None:
        """`autocommit`: each statement commits on its own, with no BEGIN/COMMIT round trips
        (PostgreSQL; for reads and single-statement writes)."""
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT") if autocommit else engine
        self.dialect = engine.dialect

    def connect(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return self._translated(self.engine.connect)

    def begin(
        self, *, conflict: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A transaction; `conflict`: what a unique key already taken means to the caller."""
        return self._translated(self.engine.begin, conflict)

    @staticmethod
    @contextlib.asynccontextmanager
    async def _translated(
        open_: Callable[[], contextlib.AbstractAsyncContextManager[AsyncConnection]],
        conflict: str | None = None,
    ) -> AsyncIterator[AsyncConnection]:
        with translating(conflict):
            async with open_() as conn:
                yield conn


@contextlib.contextmanager
def translating(conflict: str | None = None) -> Iterator[None]:
    """The driver's errors raised within, as the port's; `conflict`: what a unique key already
    taken means to the caller (None: it stays a fault)."""
    try:
        yield
    except IntegrityError as exc:
        if conflict is None:
            raise
        raise Conflict(conflict) from exc
    except sa.exc.SQLAlchemyError as exc:
        if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
            raise ConnectionLost(unavailable_reason(exc)) from exc
        if is_unavailable(exc):
            raise StoreUnavailable(unavailable_reason(exc)) from exc
        raise
    except OSError as exc:  # ConnectionRefusedError and kin, before the driver wraps them
        raise StoreUnavailable(unavailable_reason(exc)) from exc


def uninterrupted(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Run a write to its end even if the caller is cancelled meanwhile, then let the cancellation
    through. A write cut off inside its transaction can leave the connection holding SQLite's write
    lock (or a row lock) until it is garbage-collected, and every other writer waits for it."""

    @functools.wraps(method)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        write = asyncio.ensure_future(method(*args, **kwargs))
        try:
            return await asyncio.shield(write)
        except asyncio.CancelledError:
            await asyncio.wait({write})
            if not write.cancelled() and write.exception() is not None:
                log.warning("a write interrupted by a cancel failed: %s", write.exception())
            raise

    return run
