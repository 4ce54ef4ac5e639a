"""Authenticator: turns the credential of one HTTP authentication scheme into a principal.

Contract, for every adapter:
- `scheme` is the scheme name as it appears in `Authorization` and `WWW-Authenticate`
  (`Bearer`, `Basic`), compared case-insensitively by the caller.
- `authenticate` receives the credential that follows the scheme name and returns the principal
  it proves, or raises `Unauthenticated` with a reason fit for the client (never the credential
  itself). It raises `AuthUnavailable` when the proof cannot be checked now (an identity provider
  that does not answer): the caller is told to retry, not that the credential is bad.
- `challenge` is the `WWW-Authenticate` challenge for this scheme; `error` (RFC 6750's
  `invalid_token`, say) is added when a credential was sent and refused.
"""

from __future__ import annotations

from typing import Protocol

from poiesis.domain.errors import Unavailable
from poiesis.domain.principal import Principal


class AuthUnavailable(Unavailable):
    """The credential could not be checked now; it may be good."""


class Authenticator(Protocol):
    @property
    def scheme(self) -> str: ...

    async def authenticate(self, credentials: str) -> Principal: ...

    def challenge(self, error: str | None = None) -> str: ...
