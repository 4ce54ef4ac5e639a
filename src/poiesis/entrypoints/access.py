"""Who is calling: the `Authorization` header handed to the authenticator of its scheme.

With no authenticator configured every caller is `ANONYMOUS` (authentication off). Otherwise a
request without a credential, or with a scheme this server does not take, is unauthenticated, and
the 401 carries one challenge per configured scheme.
"""

from __future__ import annotations

import logging

from poiesis.domain.errors import Unauthenticated
from poiesis.domain.principal import ANONYMOUS, Principal
from poiesis.ports.auth import Authenticator

log = logging.getLogger(__name__)


class Access:
    def __init__(self, authenticators: list[Authenticator]) -> None:
        self._by_scheme = {a.scheme.lower(): a for a in authenticators}

    @property
    def schemes(self) -> list[str]:
        return [a.scheme for a in self._by_scheme.values()]

    async def principal(self, authorization: str | None, *, client: str) -> Principal:
        if not self._by_scheme:
            return ANONYMOUS
        if not authorization or not authorization.strip():
            raise Unauthenticated("authentication required")
        scheme, _, credentials = authorization.strip().partition(" ")
        authenticator = self._by_scheme.get(scheme.lower())
        if authenticator is None:
            raise Unauthenticated(f"authenticate with {' or '.join(self.schemes)}")
        try:
            return await authenticator.authenticate(credentials)
        except Unauthenticated as exc:
            # Who tried and why, never what they sent.
            log.info(
                "authentication refused",
                extra={"fields": {"client": client, "scheme": scheme, "reason": str(exc)}},
            )
            raise

    def challenges(self, *, refused: bool) -> str:
        """The `WWW-Authenticate` value of a 401: every scheme's challenge, the sent one marked."""
        return ", ".join(
            a.challenge("invalid_token" if refused and a.scheme == "Bearer" else None)
            for a in self._by_scheme.values()
        )
