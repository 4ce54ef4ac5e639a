"""Who is asking, and which tasks that lets them see.

Every task belongs to the principal that created it. A principal sees and cancels its own tasks
only; an admin sees and cancels all of them. While authentication is off every caller is
`ANONYMOUS`, who is an admin: one user on their own machine sees everything, as before.
"""

from __future__ import annotations

import msgspec

from poiesis.domain.errors import Forbidden


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    """The owner recorded on the tasks this principal creates."""
    admin: bool = False


OWNER_KEY = "owner"
"""The task log `metadata` key that shows a task's owner in the FULL view."""

ANONYMOUS = Principal(name="anonymous", admin=True)
"""The caller while authentication is off."""


def owner_scope(principal: Principal) -> str | None:
    """The owner a lookup by this principal is confined to; None means every owner."""
    return None if principal.admin else principal.name


def listing_owner(principal: Principal, requested: str | None) -> str | None:
    """The owner filter of a ListTasks call. Admins may ask for any owner's tasks (or all); anyone
    else lists their own, and asking for somebody else's is refused rather than quietly narrowed."""
    if principal.admin:
        return requested or None
    if requested and requested != principal.name:
        raise Forbidden("only an admin may list another owner's tasks")
    return principal.name
