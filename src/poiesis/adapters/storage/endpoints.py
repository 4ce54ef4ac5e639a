"""Per-endpoint storage settings: credentials and options for the URLs that start with a prefix.

An operator gives each bucket, account or server its own credentials in a TOML file (a Kubernetes
Secret mounted as a file, in a deployment):

    [[endpoint]]
    url = "s3://lab-data/"
    options = { endpoint = "https://minio.example.org", access_key_id = "...", secret_access_key = "..." }

    [[endpoint]]
    url = "https://data.example.org/"
    options = { headers = { Authorization = "Bearer ..." } }

The longest matching `url` prefix wins. URLs with no endpoint use each store's defaults (for S3,
GCS and Azure: the standard environment variables and instance credentials). `options` are the
store's own configuration keys (obstore's S3/GCS/Azure config; `username`/`password` for FTP;
`headers` for HTTP), and `client` holds HTTP client options (`allow_http`, `timeout`, ...).
Option values are secrets: they are never logged, and are scrubbed from error messages.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec


class Endpoint(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str
    options: dict[str, Any] = {}
    client: dict[str, Any] = {}

    def __repr__(self) -> str:  # never print credentials
        return f"Endpoint(url={self.url!r}, options=<{len(self.options)} hidden>)"


class EndpointsFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    endpoint: list[Endpoint] = []


def load_endpoints(path: str | None) -> list[Endpoint]:
    if not path:
        return []
    try:
        raw = tomllib.loads(Path(path).read_text())
        return msgspec.convert(raw, EndpointsFile).endpoint
    except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"storage endpoints file {path}: {exc}") from exc


class Endpoints:
    def __init__(self, endpoints: list[Endpoint]) -> None:
        self._endpoints = sorted(endpoints, key=lambda e: len(e.url), reverse=True)
        secrets = {v for e in endpoints for k, v in _items(e.options) if _SECRET_KEY.search(k)}
        self._secrets = sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)

    def find(self, url: str) -> Endpoint | None:
        return next((e for e in self._endpoints if url.startswith(e.url)), None)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


_SECRET_KEY = re.compile(r"key|secret|token|password|authorization|sas|credential", re.IGNORECASE)


def _items(options: dict[str, Any]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for key, value in options.items():
        if isinstance(value, dict):
            found += [(f"{key}.{k}", v) for k, v in _items(value)]
        elif isinstance(value, str):
            found.append((key, value))
    return found
