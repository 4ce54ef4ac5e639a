"""Idempotent creates: a client that did not see the answer to a CreateTask (a timeout, a dropped
connection, a restarted API) sends it again with the same `Idempotency-Key` header and gets the
task the first one made, never a second task.

A key belongs to its owner (two users' keys never meet) and lives as long as the task it made. The
request it came with is kept as a fingerprint: the same key with another body is refused (422), for
it is a client's mistake, not a retry.
"""

from __future__ import annotations

import hashlib

import msgspec

from poiesis.domain.errors import InvalidRequest

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255


class Key(msgspec.Struct, frozen=True):
    value: str
    fingerprint: str
    """The SHA-256 of the request's body, hex."""


def key(header: str | None, body: bytes) -> Key | None:
    """The key a create came with (None without the header), checked."""
    if header is None:
        return None
    if not 1 <= len(header) <= MAX_KEY_CHARS or not all(" " <= c <= "~" for c in header):
        raise InvalidRequest(
            HEADER, f"must be 1 to {MAX_KEY_CHARS} printable ASCII characters (a UUID, for example)"
        )
    return Key(header, hashlib.sha256(body).hexdigest())
