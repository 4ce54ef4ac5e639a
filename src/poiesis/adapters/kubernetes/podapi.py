"""The few Kubernetes API calls the Task Recorder makes, over plain HTTP: its own Pod (a GET, then a
watch narrowed to that one name) and a container's log.

The official client loads a thousand model classes (well over 100 MB and seconds of CPU per
process); a recorder runs in every task Pod, so it keeps to httpx and JSON. Credentials are the
ServiceAccount token mounted into the container (re-read on every request, so rotation just works),
the cluster CA, and the API address from the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx

from poiesis.domain.errors import Forbidden, PoiesisError, Unavailable

IN_CLUSTER = "/var/run/secrets/kubernetes.io/serviceaccount"


class ApiError(PoiesisError):
    """A call to the Kubernetes API that did not succeed; the errors below say which way."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class PodNotReadable(ApiError, Forbidden):
    """401, 403 or 404: the recorder's grant, its token's account or its Pod is not (yet, or no
    longer) there."""


class WatchExpired(ApiError):
    """410: the watch's resource version is too old; start again from a GET."""


class ApiUnavailable(ApiError, Unavailable):
    """The API did not answer (a transport error) or failed (5xx, 429): try again later."""


def _error(status: int, reason: str) -> ApiError:
    if status in (401, 403, 404):
        return PodNotReadable(status, reason)
    if status == 410:
        return WatchExpired(status, reason)
    if status == 429 or status >= 500:
        return ApiUnavailable(status, reason)
    return ApiError(status, reason)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """The one place httpx's errors become this module's."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise ApiUnavailable(0, f"{type(exc).__name__}: {exc}") from exc


class PodApi:
    def __init__(self, server: str, token_file: str, ca_file: str | None, *, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self.token_file = token_file
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._http = httpx.AsyncClient(verify=verify, timeout=httpx.Timeout(timeout, read=90.0))

    @classmethod
    def in_cluster(cls) -> PodApi:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host:
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", f"{IN_CLUSTER}/token", f"{IN_CLUSTER}/ca.crt")

    async def aclose(self) -> None:
        await self._http.aclose()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {Path(self.token_file).read_text().strip()}"}

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.status_code >= 400:
            raise _error(response.status_code, response.reason_phrase)

    async def pod(self, namespace: str, name: str) -> dict[str, Any]:
        with _translated():
            response = await self._http.get(
                f"{self.server}/api/v1/namespaces/{namespace}/pods/{name}", headers=self._headers()
            )
        self._check(response)
        pod: dict[str, Any] = response.json()
        return pod

    async def watch_pod(
        self, namespace: str, name: str, resource_version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event type, Pod) from `resource_version` on, until the server ends the watch (60 s)."""
        params = {
            "watch": "1",
            "fieldSelector": f"metadata.name={name}",
            "resourceVersion": resource_version,
            "timeoutSeconds": "60",
            "allowWatchBookmarks": "false",
        }
        url = f"{self.server}/api/v1/namespaces/{namespace}/pods"
        with _translated():
            async with self._http.stream("GET", url, params=params, headers=self._headers()) as response:
                self._check(response)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise _error(
                            int(status.get("code") or 500), str(status.get("reason") or "watch error")
                        )
                    yield event["type"], event["object"]

    async def log_tail(self, namespace: str, name: str, container: str, limit_bytes: int) -> str:
        """The end of a container's log: its last 2,000 lines, cut to `limit_bytes`."""
        with _translated():
            response = await self._http.get(
                f"{self.server}/api/v1/namespaces/{namespace}/pods/{name}/log",
                params={"container": container, "tailLines": "2000"},
                headers=self._headers(),
            )
        self._check(response)
        return response.content[-limit_bytes:].decode("utf-8", "replace")
