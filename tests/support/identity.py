"""A real OpenID Provider for the tests: panva's oidc-provider on Node.js, on 127.0.0.1.

scripts/test installs it from npm under ~/.cache/poiesis-oidc. Tokens come from it through a real
client_credentials grant, signed with keys this module generates and hands it; `restart` with new
keys is a key rotation at the provider.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.postgres import free_port

SCRIPT = Path(__file__).parent / "oidc" / "provider.mjs"
AUDIENCE = "https://tes.poiesis.test/"


def modules() -> Path | None:
    home = Path(os.environ.get("POIESIS_OIDC_HOME") or Path.home() / ".cache" / "poiesis-oidc")
    path = home / "node_modules"
    return path if (path / "oidc-provider").is_dir() and shutil.which("node") else None


def rsa_key(kid: str) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.algorithms.RSAAlgorithm.to_jwk(key, as_dict=True) | {"kid": kid, "use": "sig", "alg": "RS256"}


def ec_key(kid: str) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True) | {"kid": kid, "use": "sig", "alg": "ES256"}


@dataclass
class Client:
    client_id: str
    client_secret: str
    groups: list[str] = field(default_factory=list)


@dataclass
class Provider:
    port: int
    work: Path
    clients: list[Client]
    resources: dict[str, dict[str, Any]]
    keys: list[dict[str, Any]]
    process: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, client_id: str, resource: str = AUDIENCE) -> str:
        """An access token for `client_id` through the client_credentials grant."""
        client = next(c for c in self.clients if c.client_id == client_id)
        response = httpx.post(
            f"{self.issuer}/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client.client_id,
                "client_secret": client.client_secret,
                "resource": resource,
                "scope": "tes",
            },
            timeout=10,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def start(self) -> float:
        """Start the provider; returns how long it took to answer discovery."""
        began = time.monotonic()
        config = self.work / f"provider-{self.port}.json"
        config.write_text(
            json.dumps(
                {
                    "port": self.port,
                    "issuer": self.issuer,
                    "jwks": {"keys": self.keys},
                    "clients": [c.__dict__ for c in self.clients],
                    "resources": self.resources,
                }
            )
        )
        with (self.work / f"provider-{self.port}.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["node", str(SCRIPT), str(config)],
                env=os.environ | {"OIDC_PROVIDER_MODULES": str(modules())},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = began + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the OIDC provider exited: {(self.work / f'provider-{self.port}.log').read_text()}"
                )
            try:
                if httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1).status_code == 200:
                    return time.monotonic() - began
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the OIDC provider did not start in 30 s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, keys: list[dict[str, Any]]) -> None:
        """Rotate: the provider comes back on the same address publishing only `keys`."""
        self.stop()
        self.keys = keys
        self.start()


@contextmanager
def running_provider(
    work: Path,
    clients: list[Client],
    *,
    keys: list[dict[str, Any]] | None = None,
    resources: dict[str, dict[str, Any]] | None = None,
) -> Iterator[Provider]:
    provider = Provider(
        port=free_port(),
        work=work,
        clients=clients,
        resources=resources or {AUDIENCE: {"audience": AUDIENCE, "ttl": 600}},
        keys=keys or [rsa_key("first")],
    )
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()
