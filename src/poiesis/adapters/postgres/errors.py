"""Where asyncpg's errors become the port's, for statements sent through asyncpg directly: the
same reading as `sqlalchemy.translation` gives SQLAlchemy's ("cannot serve now" is StoreUnavailable,
a unique key taken is Conflict, anything else stays a fault)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg

from poiesis.domain.errors import Conflict
from poiesis.ports.store import StoreUnavailable

# SQLSTATE classes that mean "not now, try again": 08 connection exception, 53 insufficient resources
# (too many connections), 57 operator intervention (shutting down, starting up, terminated by an
# administrator). asyncpg's errors for these reach SQLAlchemy as a plain DBAPIError.
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")


class ConnectionLost(StoreUnavailable):
    """The connection broke under a statement (the database restarted since it was opened): the
    pool has let go of every connection as old as it, so one more try gets a fresh one."""


# asyncpg's own errors for a connection that broke under a statement (SQLSTATE class 08, or the
# socket); its InterfaceError says "connection is closed" for a connection it had seen close.
_LOST = (asyncpg.PostgresConnectionError, ConnectionResetError, BrokenPipeError)


@contextlib.asynccontextmanager
async def asyncpg_errors(
    *, conflict: str | None, on_lost: Callable[[], Awaitable[None]]
) -> AsyncIterator[None]:
    """The same translation for statements sent through asyncpg directly (`direct`): a connection
    lost under a statement is ConnectionLost (after `on_lost`), "cannot serve now" StoreUnavailable,
    a unique key taken Conflict(`conflict`)."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        if conflict is None:
            raise
        raise Conflict(conflict) from exc
    except (*_LOST, asyncpg.InterfaceError) as exc:
        if isinstance(exc, asyncpg.InterfaceError) and "connection is closed" not in str(exc):
            raise  # a fault in the call, not in the connection
        await on_lost()
        raise ConnectionLost(unavailable_reason(exc)) from exc
    except asyncpg.PostgresError as exc:
        if str(exc.sqlstate or "")[:2] in UNAVAILABLE_SQLSTATE_CLASSES:
            raise StoreUnavailable(unavailable_reason(exc)) from exc
        raise
    except (OSError, TimeoutError) as exc:  # refused, unreachable; no connection free in time
        raise StoreUnavailable(unavailable_reason(exc)) from exc


def unavailable_reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return f"database unavailable: {type(orig).__name__}: {str(orig).splitlines()[0] if str(orig) else ''}"
