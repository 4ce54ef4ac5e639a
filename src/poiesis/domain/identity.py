"""Task ids and page tokens.

A task id is a lower-case ULID: 26 characters of Crockford base32, URL-safe (no `:` or `/`, so
`/tasks/{id}:cancel` parses), valid as part of a Kubernetes object name, and ordered by creation
time, so that newest-first keyset pagination is an index walk on the primary key.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime

from ulid import ULID

from poiesis.domain.errors import InvalidRequest

_ID = re.compile(r"^[0-9a-hjkmnp-tv-z]{26}$")
_TOKEN_PREFIX = b"t1."


def new_task_id(now: datetime) -> str:
    return str(ULID.from_datetime(now)).lower()


def is_task_id(value: str) -> bool:
    return bool(_ID.fullmatch(value))  # `$` alone would let a trailing newline through


def encode_page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(_TOKEN_PREFIX + last_id.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> str:
    """The id of the last task of the previous page. Raises InvalidRequest for a forged token."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidRequest("page_token", "is not a token this service issued") from None
    if not raw.startswith(_TOKEN_PREFIX):
        raise InvalidRequest("page_token", "is not a token this service issued")
    last = raw[len(_TOKEN_PREFIX) :].decode(errors="replace")
    if not is_task_id(last):
        raise InvalidRequest("page_token", "is not a token this service issued")
    return last
