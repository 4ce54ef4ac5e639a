"""OIDC token checks with hand-minted tokens; the provider is an httpx MockTransport, or a small HTTP
server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from poiesis.adapters.auth.oidc import OidcAuthenticator, OidcIssuer, check_issuer
from poiesis.domain.errors import Unauthenticated
from poiesis.ports.auth import AuthUnavailable

ISSUER = "https://id.example.org"
AUD = "tes"


class FakeProvider:
    """Discovery and a JWKS over httpx's MockTransport; counts fetches, can go down."""

    def __init__(self, issuer: str = ISSUER) -> None:
        self.issuer = issuer
        self.keys: dict[str, rsa.RSAPrivateKey] = {
            "k1": rsa.generate_private_key(public_exponent=65537, key_size=2048)
        }
        self.fetches = 0
        self.down = False
        self.discovery: dict[str, Any] = {"issuer": issuer, "jwks_uri": f"{issuer}/keys"}

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("refused", request=request)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=self.discovery)
        self.fetches += 1
        keys = [
            jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key(), as_dict=True) | {"kid": kid, "alg": "RS256"}
            for kid, k in self.keys.items()
        ]
        return httpx.Response(200, json={"keys": keys})

    def token(self, kid: str = "k1", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "aud": AUD, "sub": "alice", "exp": now + 300, "iat": now} | claims
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})


def authenticator(
    provider: FakeProvider, clock: list[float] | None = None, **issuer: Any
) -> OidcAuthenticator:
    now = clock or [0.0]
    http = httpx.AsyncClient(transport=httpx.MockTransport(provider.handler))
    settings = OidcIssuer(issuer=provider.issuer, audience=[AUD], **issuer)
    return OidcAuthenticator(
        [settings], http=http, leeway_seconds=0, jwks_refresh_seconds=30, monotonic=lambda: now[0]
    )


async def test_a_valid_token_names_its_principal_and_admin_from_a_claim() -> None:
    provider = FakeProvider()
    auth = authenticator(provider, principal_claim="email", admin_values=["tes-admins"])
    user = await auth.authenticate(provider.token(email="a@example.org", groups=["lab"]))
    assert (user.name, user.admin) == ("a@example.org", False)
    admin = await auth.authenticate(provider.token(email="r@example.org", groups="tes-admins"))
    assert admin.admin


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        pytest.param({"exp": -5}, "expired", id="expired"),
        pytest.param({"nbf": 600}, "not valid yet", id="not before"),
        pytest.param({"exp": None}, "'exp'", id="no expiry"),
        pytest.param({"aud": "other"}, "audience", id="audience"),
        pytest.param({"aud": None}, "'aud'", id="no audience"),
        pytest.param({"sub": None}, "'sub'", id="no subject"),
        pytest.param({"iss": "https://evil.example"}, "issuer", id="issuer"),
    ],
)
async def test_claims_that_fail(claims: dict[str, Any], reason: str) -> None:
    """`exp` and `nbf` are given as seconds from now."""
    now = int(time.time())
    claims = {k: now + v if k in ("exp", "nbf") and v is not None else v for k, v in claims.items()}
    provider = FakeProvider()
    with pytest.raises(Unauthenticated, match=reason):
        await authenticator(provider).authenticate(provider.token(**claims))


async def test_garbage_is_refused_without_fetching_anything() -> None:
    provider = FakeProvider()
    auth = authenticator(provider)
    for token in ("", "abc", "a.b.c", "e30.e30."):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(token)
    assert provider.fetches == 0


def bogus(kid: str, provider: FakeProvider) -> str:
    """A token naming a key id the provider does not publish."""
    return jwt.encode({"iss": provider.issuer}, provider.keys["k1"], "RS256", {"kid": kid})


async def test_a_rotated_key_is_used_at_once_and_a_missing_one_looked_for_once_per_interval() -> None:
    provider = FakeProvider()
    clock = [0.0]
    auth = authenticator(provider, clock)
    old = provider.token()
    await auth.authenticate(old)
    assert provider.fetches == 1
    provider.keys["k2"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # The same instant as the last fetch: a provider that signs with a key as soon as it publishes it.
    assert (await auth.authenticate(provider.token("k2"))).name == "alice"
    assert provider.fetches == 2
    for _ in range(20):  # a client retrying one made-up key id: looked for once, not every time
        with pytest.raises(Unauthenticated, match="does not publish"):
            await auth.authenticate(bogus("bogus", provider))
    assert provider.fetches == 3
    clock[0] = 31.0  # an interval later it is looked for again (once)
    for _ in range(5):
        with pytest.raises(Unauthenticated, match="does not publish"):
            await auth.authenticate(bogus("bogus", provider))
    assert provider.fetches == 4
    del provider.keys["k1"]
    clock[0] = 400.0  # past the cache's life: the set is fetched again and k1 is gone
    with pytest.raises(Unauthenticated, match="does not publish"):
        await auth.authenticate(old)
    assert provider.fetches == 5  # that fetch was the answer for k1 too: no second one


@pytest.fixture
def served() -> Iterator[FakeProvider]:
    """A FakeProvider over real HTTP on 127.0.0.1, its issuer that address."""
    providers: list[FakeProvider] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer = providers[0].handler(httpx.Request("GET", providers[0].issuer + self.path))
            self.send_response(answer.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request on stderr is noise in a test's output

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    providers.append(FakeProvider(f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield providers[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_a_key_published_and_used_at_once_is_accepted_over_http(served: FakeProvider) -> None:
    """The default settings (keys fetched at most once per 30 s before) and a real clock: the
    rotation is seen on the first request, and the requests that arrive together share one fetch."""
    async with httpx.AsyncClient() as http:
        auth = OidcAuthenticator([OidcIssuer(issuer=served.issuer, audience=[AUD])], http=http)
        old = served.token()
        assert (await auth.authenticate(old)).name == "alice"
        assert served.fetches == 1
        served.keys = {"k2": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        new = served.token("k2")
        users = await asyncio.gather(*(auth.authenticate(new) for _ in range(10)))
        assert [u.name for u in users] == ["alice"] * 10
        assert served.fetches == 2
        with pytest.raises(Unauthenticated, match="does not publish"):
            await auth.authenticate(old)  # the key the provider dropped stops verifying


async def test_a_flood_of_unknown_key_ids_makes_a_bounded_number_of_fetches() -> None:
    provider = FakeProvider()
    clock = [0.0]
    auth = authenticator(provider, clock)
    await auth.authenticate(provider.token())
    for second in range(0, 300, 3):  # 1000 made-up key ids over ten intervals of 30 s
        clock[0] = float(second)
        for _ in range(10):
            with pytest.raises(Unauthenticated, match="does not publish"):
                await auth.authenticate(bogus(uuid.uuid4().hex, provider))
    # The first fetch, a burst of three, then one per interval earned over the 297 s.
    assert provider.fetches <= 1 + 3 + 10
    # Spent by the flood, the budget is back an interval later: a rotation then is picked up.
    provider.keys["k2"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    clock[0] = 297.0 + 30.0
    assert (await auth.authenticate(provider.token("k2"))).name == "alice"


async def test_cached_keys_keep_verifying_while_the_provider_is_down() -> None:
    provider = FakeProvider()
    clock = [0.0]
    auth = authenticator(provider, clock)
    token = provider.token()
    await auth.authenticate(token)
    provider.down = True
    clock[0] = 1000.0
    assert (await auth.authenticate(token)).name == "alice"
    cold = authenticator(provider)
    with pytest.raises(AuthUnavailable):
        await cold.authenticate(token)


async def test_discovery_that_names_another_issuer_is_not_trusted() -> None:
    provider = FakeProvider()
    provider.discovery["issuer"] = "https://evil.example"
    with pytest.raises(AuthUnavailable):
        await authenticator(provider).authenticate(provider.token())


async def test_several_issuers_qualify_the_principal() -> None:
    one, two = FakeProvider(), FakeProvider("https://two.example.org")

    def handler(request: httpx.Request) -> httpx.Response:
        return (one if request.url.host == "id.example.org" else two).handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    auth = OidcAuthenticator(
        [OidcIssuer(issuer=one.issuer, audience=[AUD]), OidcIssuer(issuer=two.issuer, audience=[AUD])],
        http=http,
    )
    assert (await auth.authenticate(one.token())).name == f"{ISSUER}#alice"
    assert (await auth.authenticate(two.token())).name == "https://two.example.org#alice"


@pytest.mark.parametrize(
    ("issuer", "problem"),
    [
        pytest.param(OidcIssuer(issuer="http://id.example.org", audience=["a"]), "https", id="plain http"),
        pytest.param(OidcIssuer(issuer="https://id.example.org", audience=[]), "audience", id="no audience"),
        pytest.param(
            OidcIssuer(issuer="https://id.example.org", audience=["a"], algorithms=["HS256"]),
            "HS256",
            id="hmac",
        ),
        pytest.param(
            OidcIssuer(issuer="https://id.example.org", audience=["a"], algorithms=["none"]),
            "none",
            id="none",
        ),
    ],
)
def test_issuer_settings_that_are_refused(issuer: OidcIssuer, problem: str) -> None:
    assert any(problem in p for p in check_issuer(issuer))


def test_loopback_http_issuers_are_allowed_for_development() -> None:
    assert check_issuer(OidcIssuer(issuer="http://127.0.0.1:5556", audience=["a"])) == []
