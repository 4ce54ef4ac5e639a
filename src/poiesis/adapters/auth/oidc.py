"""OIDC bearer tokens: JWTs checked against the keys each configured issuer publishes.

What a token must pass, in order: it parses; its `iss` is one of the configured issuers (nothing is
ever fetched from a URL a token names); its `alg` is on that issuer's allow-list, which admits only
public-key algorithms (never `none`, never HMAC, so a public key can never be used as a shared
secret); it is signed by a key in the issuer's JWKS, found through OIDC discovery; its `exp`, `nbf`,
`iss` and `aud` hold, within `leeway_seconds`. Signatures are verified by PyJWT.

The JWKS of an issuer is cached for `jwks_cache_seconds` and fetched again at once when a token names
a key id the cache lacks (the provider rotated its keys; some sign with a new key as soon as they
publish it). So that a stream of tokens with made-up key ids cannot turn the server into a load on
the provider, those early fetches spend a small budget (`_BURST` of them, one more earned per
`jwks_refresh_seconds`), and a key id that a fetch did not find is not looked for again for
`jwks_refresh_seconds`. A refetch replaces the set, so a key the provider removed stops verifying.
When the provider cannot be reached, keys already cached go on verifying; with none cached the
request is answered 503, not 401: the token may well be good.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import msgspec

from poiesis.domain.errors import Unauthenticated
from poiesis.domain.hosts import is_loopback
from poiesis.domain.principal import Principal
from poiesis.ports.auth import AuthUnavailable

log = logging.getLogger(__name__)

PUBLIC_KEY_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
_FAMILY = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}

# Early fetches (for a key id the cache lacks) are a token bucket per issuer: `_BURST` at once, then
# one per `jwks_refresh_seconds`. A bucket rather than a minimum spacing between fetches: a rotation
# is fetched at once even just after another fetch (start-up, the cache's expiry, a first rotation),
# while a flood of made-up key ids costs the provider no more, on average, than the one fetch per
# interval this setting always allowed; a spacing short enough not to delay a rotation (a second,
# say) would let such a flood cost a fetch every second. Under a flood, a real rotation waits at most
# one interval, as it did before.
_BURST = 3
# Key ids a fetch did not find, remembered for `jwks_refresh_seconds`, so that a client retrying a
# token signed by a removed key (or one with a made-up id) spends the budget once, not every
# request; bounded, the oldest forgotten first, so that a flood cannot grow it.
_MISSES = 1024


class OidcIssuer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One trusted identity provider (an `[[oidc]]` table in the TOML file)."""

    issuer: str
    """The issuer URL exactly as tokens carry it in `iss`; https, or http on a loopback host."""
    audience: list[str]
    """Accepted `aud` values: a token must name at least one."""
    principal_claim: str = "sub"
    """The claim whose value becomes the task owner (e.g. `preferred_username`, `email`)."""
    admin_claim: str = "groups"
    """The claim checked for `admin_values` (a string or a list of strings)."""
    admin_values: list[str] = []
    """Principals whose `admin_claim` holds one of these see and cancel every task."""
    algorithms: list[str] = msgspec.field(default_factory=lambda: list(PUBLIC_KEY_ALGORITHMS))
    """Signature algorithms accepted from this issuer (public-key ones only)."""


def check_issuer(issuer: OidcIssuer) -> list[str]:
    """What is wrong with an issuer's settings, in words for a start-up error."""
    problems = []
    if not _trusted_url(issuer.issuer):
        problems.append(f"oidc issuer {issuer.issuer!r} must be an https URL (http only on a loopback host)")
    if not issuer.audience:
        problems.append(f"oidc issuer {issuer.issuer!r} needs at least one audience")
    bad = [a for a in issuer.algorithms if a not in PUBLIC_KEY_ALGORITHMS]
    if bad or not issuer.algorithms:
        problems.append(
            f"oidc issuer {issuer.issuer!r}: algorithms must be among {', '.join(PUBLIC_KEY_ALGORITHMS)}"
            f" (refused: {', '.join(bad) or 'an empty list'})"
        )
    return problems


def _trusted_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and bool(parts.hostname) and is_loopback(parts.hostname or "")


class _KeySet:
    """One issuer's published keys, fetched through discovery and cached."""

    def __init__(
        self, issuer: str, http: httpx.AsyncClient, monotonic: Callable[[], float], refresh_seconds: float
    ) -> None:
        self.issuer = issuer
        self._http = http
        self._monotonic = monotonic
        self._refresh_seconds = refresh_seconds
        self._keys: list[dict[str, Any]] = []
        self.fetched_at: float | None = None
        # Fetches are numbered, not timed, to tell whether one began after a caller looked: two
        # readings of a clock can be equal.
        self.attempts = 0
        """Fetches begun."""
        self.fetched = 0
        """The number of the last fetch that succeeded (0: none yet)."""
        self._tokens = float(_BURST)
        self._filled_at = monotonic()
        self._missed: dict[str | None, float] = {}
        self._lock = asyncio.Lock()

    def find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        family = _FAMILY.get(alg[:2])
        fitting = [
            k
            for k in self._keys
            if k.get("kty") == family
            and k.get("use", "sig") == "sig"
            and k.get("alg", alg) == alg
            and (kid is None or k.get("kid") == kid)
        ]
        if len(fitting) != 1:  # no key, or no kid to choose between several
            return None
        try:
            return jwt.PyJWK(fitting[0], algorithm=alg)
        except jwt.PyJWTError:
            return None

    async def refresh(self, seen: int, *, looking_for: tuple[str | None, str] | None = None) -> None:
        """Fetch the key set, unless a fetch began since the caller saw `attempts == seen` (callers
        that waited for one fetch all use it). An early fetch, `looking_for` a (kid, alg) the set
        lacked, is skipped once a fetch the caller waited for brought that key, and needs the budget."""
        async with self._lock:
            if self.attempts != seen:
                return
            if looking_for is not None and (self.find(*looking_for) is not None or not self._spend()):
                return
            self.attempts += 1
            attempt, started = self.attempts, self._monotonic()
            try:
                self._keys = await self._fetch()
            except (httpx.HTTPError, ValueError, msgspec.DecodeError) as exc:
                log.warning("oidc %s: the key set could not be fetched: %s", self.issuer, exc)
                if not self._keys:
                    raise AuthUnavailable(f"the identity provider {self.issuer} cannot be reached") from None
                return
            self.fetched, self.fetched_at = attempt, started
            log.info("oidc %s: %d key(s) fetched", self.issuer, len(self._keys))

    def _spend(self) -> bool:
        """Take one early fetch from the bucket, if it holds one."""
        if self._refresh_seconds <= 0:
            return True
        now = self._monotonic()
        earned = (now - self._filled_at) / self._refresh_seconds
        self._tokens, self._filled_at = min(float(_BURST), self._tokens + earned), now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def missed_lately(self, kid: str | None, now: float) -> bool:
        """Whether a fetch less than `refresh_seconds` ago did not find `kid`."""
        at = self._missed.get(kid)
        return at is not None and now - at < self._refresh_seconds

    def missed(self, kid: str | None, now: float) -> None:
        """Note that a fetch at `now` did not find `kid`."""
        self._missed.pop(kid, None)
        self._missed[kid] = now  # the dict stays oldest first
        while self._missed:
            oldest, at = next(iter(self._missed.items()))
            if now - at < self._refresh_seconds and len(self._missed) <= _MISSES:
                break
            del self._missed[oldest]

    async def _fetch(self) -> list[dict[str, Any]]:
        discovery = await self._get_json(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
        if discovery.get("issuer") != self.issuer:
            raise ValueError(f"discovery names issuer {discovery.get('issuer')!r}")
        uri = discovery.get("jwks_uri")
        if not isinstance(uri, str) or not _trusted_url(uri):
            raise ValueError(f"jwks_uri {uri!r} is not an https URL")
        keys = (await self._get_json(uri)).get("keys")
        if not isinstance(keys, list):
            raise ValueError("the JWKS has no keys array")
        return [k for k in keys if isinstance(k, dict)]

    async def _get_json(self, url: str) -> dict[str, Any]:
        response = await self._http.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        document = msgspec.json.decode(response.content)
        if not isinstance(document, dict):
            raise ValueError(f"{url} is not a JSON object")
        return document


class OidcAuthenticator:
    def __init__(
        self,
        issuers: list[OidcIssuer],
        *,
        http: httpx.AsyncClient,
        leeway_seconds: float = 30.0,
        jwks_cache_seconds: float = 300.0,
        jwks_refresh_seconds: float = 30.0,
        qualify: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuers = {i.issuer: i for i in issuers}
        self._keys = {i.issuer: _KeySet(i.issuer, http, monotonic, jwks_refresh_seconds) for i in issuers}
        self._leeway = leeway_seconds
        self._cache_seconds = jwks_cache_seconds
        self._qualify = qualify or len(issuers) > 1
        self._monotonic = monotonic

    @property
    def scheme(self) -> str:
        return "Bearer"

    def challenge(self, error: str | None = None) -> str:
        return 'Bearer realm="poiesis"' + (f', error="{error}"' if error else "")

    async def authenticate(self, credentials: str) -> Principal:
        token = credentials.strip()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Unauthenticated("the bearer token is not a well-formed JWT") from None
        iss = unverified.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise Unauthenticated("the token's issuer is not trusted by this server")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            raise Unauthenticated(f"tokens signed with {alg!r} are not accepted")
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        key = await self._key(self._keys[issuer.issuer], kid, alg)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=issuer.audience,
                issuer=issuer.issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the token is not meant for this server (audience)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the token is invalid ({type(exc).__name__})") from None
        return self._principal(issuer, claims)

    async def _key(self, keys: _KeySet, kid: str | None, alg: str) -> jwt.PyJWK:
        seen, now = keys.attempts, self._monotonic()
        if keys.fetched_at is None or now - keys.fetched_at > self._cache_seconds:
            await keys.refresh(seen)
        found = keys.find(kid, alg)
        if found is None and not keys.missed_lately(kid, now):
            # A key id we have not seen: the provider may have rotated. Skipped when the fetch just
            # above (or another caller's, since this one looked) already had the provider's answer.
            await keys.refresh(seen, looking_for=(kid, alg))
            found = keys.find(kid, alg)
            if found is None and keys.fetched > seen:
                keys.missed(kid, now)
        if found is None:
            raise Unauthenticated("the token is signed by a key its issuer does not publish")
        return found

    def _principal(self, issuer: OidcIssuer, claims: dict[str, Any]) -> Principal:
        value = claims.get(issuer.principal_claim)
        if not isinstance(value, str) or not value:
            raise Unauthenticated(f"the token has no {issuer.principal_claim!r} claim")
        held = claims.get(issuer.admin_claim)
        values = [held] if isinstance(held, str) else held if isinstance(held, list) else []
        admin = any(isinstance(v, str) and v in issuer.admin_values for v in values)
        name = f"{issuer.issuer}#{value}" if self._qualify else value
        return Principal(name=name, admin=admin)
