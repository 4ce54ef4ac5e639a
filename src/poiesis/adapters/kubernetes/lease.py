"""Leader election through a `coordination.k8s.io` Lease, as client-go does it.

A candidate takes the Lease when it is free or when its holder has not renewed it for
`lease_seconds`, measured on the candidate's own clock from when it last saw the Lease change (so
clocks need not agree). Updates carry the Lease's resourceVersion, so of two candidates only one
wins. The leader renews every `retry_seconds`; if it cannot renew for `renew_deadline_seconds`
(shorter than `lease_seconds`), it stops acting, before any other candidate may take over. On a
clean shutdown it hands the Lease back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("poiesis.tctl.lease")


class LeaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    holder: str | None
    lease_seconds: int
    renew_time: str | None = None
    acquire_time: str | None = None
    transitions: int = 0
    version: str | None = None
    """The object's resourceVersion: an update with a stale one fails."""


class Leases(Protocol):
    """One Lease object: read it, create it, or replace it if unchanged since `record.version`."""

    async def get(self) -> LeaseRecord | None: ...

    async def create(self, record: LeaseRecord) -> bool: ...

    async def update(self, record: LeaseRecord) -> bool: ...


class LeaseTiming(msgspec.Struct, frozen=True, kw_only=True):
    lease_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_seconds < self.renew_deadline_seconds < self.lease_seconds:
            raise ValueError("lease timing: need 0 < retry_seconds < renew_deadline_seconds < lease_seconds")


def _micro_time(now: float) -> str:
    # The Kubernetes client reads the stamp back into a datetime and writes it with isoformat(),
    # which drops the fraction of a whole second, and the apiserver then refuses the Lease
    # (MicroTime needs six digits): a stamp never falls on a whole second.
    moment = datetime.fromtimestamp(now, UTC)
    if moment.microsecond == 0:
        moment = moment.replace(microsecond=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    def __init__(
        self,
        leases: Leases,
        identity: str,
        timing: LeaseTiming,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.leases = leases
        self.identity = identity
        self.timing = timing
        self._monotonic = monotonic
        self._wall = wall
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self.leading = False
        self.terms = 0
        """How many times this candidate became the leader."""

    async def try_acquire_or_renew(self) -> bool:
        now = self._monotonic()
        stamp = _micro_time(self._wall())
        try:
            current = await self.leases.get()
        except Exception as exc:  # noqa: BLE001 (the apiserver unreachable: not renewed this time)
            log.warning("reading the Lease failed: %s", exc)
            return False
        mine = LeaseRecord(
            holder=self.identity,
            lease_seconds=int(self.timing.lease_seconds),
            renew_time=stamp,
            acquire_time=stamp,
        )
        if current is None:
            return await self._write(self.leases.create, mine)
        if self._changed(current):
            self._observed, self._observed_at = current, now
        held_by_other = current.holder not in (None, "", self.identity)
        if held_by_other and self._observed_at + current.lease_seconds > now:
            return False
        ours = current.holder == self.identity
        record = msgspec.structs.replace(
            mine,
            acquire_time=current.acquire_time if ours else stamp,
            transitions=current.transitions if ours else current.transitions + 1,
            version=current.version,
        )
        return await self._write(self.leases.update, record)

    def _changed(self, current: LeaseRecord) -> bool:
        seen = self._observed
        return seen is None or (seen.holder, seen.renew_time, seen.version) != (
            current.holder,
            current.renew_time,
            current.version,
        )

    async def _write(self, write: Callable[[LeaseRecord], Awaitable[bool]], record: LeaseRecord) -> bool:
        try:
            ok = await write(record)
        except Exception as exc:  # noqa: BLE001 (see above)
            log.warning("writing the Lease failed: %s", exc)
            return False
        if ok:
            self._observed, self._observed_at = record, self._monotonic()
        return ok

    async def release(self) -> None:
        """Hand the Lease back (clean shutdown): the next candidate need not wait it out."""
        with contextlib.suppress(Exception):
            current = await self.leases.get()
            if current is not None and current.holder == self.identity:
                await self.leases.update(
                    msgspec.structs.replace(current, holder=None, lease_seconds=1, renew_time=None)
                )

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Be a candidate forever; while the leader, run `lead` (cancelled when leadership ends)."""
        while True:
            while not await self.try_acquire_or_renew():  # noqa: ASYNC110 (polling the Lease is the protocol)
                await asyncio.sleep(self.timing.retry_seconds)
            self.leading = True
            self.terms += 1
            log.info("%s is the leader", self.identity)
            acting = asyncio.create_task(lead())
            try:
                await self._keep(acting)
            finally:
                self.leading = False
                acting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await acting
            log.warning("%s stopped leading: it could not renew the Lease", self.identity)

    async def _keep(self, acting: asyncio.Task[None]) -> None:
        """Renew until a renewal has failed for `renew_deadline_seconds` (or `acting` ends)."""
        renewed = self._monotonic()
        while not acting.done():
            done, _ = await asyncio.wait({acting}, timeout=self.timing.retry_seconds)
            if done:
                acting.result()  # an error in the controller ends leadership loudly
                return
            if await self.try_acquire_or_renew():
                renewed = self._monotonic()
            elif self._observed is not None and self._observed.holder not in (None, self.identity):
                return  # another candidate holds it now
            elif self._monotonic() - renewed >= self.timing.renew_deadline_seconds:
                return


def lease_from_object(obj: dict[str, Any]) -> LeaseRecord:
    spec = obj.get("spec") or {}
    return LeaseRecord(
        holder=spec.get("holderIdentity") or None,
        lease_seconds=int(spec.get("leaseDurationSeconds") or 15),
        renew_time=spec.get("renewTime"),
        acquire_time=spec.get("acquireTime"),
        transitions=int(spec.get("leaseTransitions") or 0),
        version=(obj.get("metadata") or {}).get("resourceVersion"),
    )


def lease_object(
    name: str, namespace: str, record: LeaseRecord, kept: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The Lease as written; `kept`: the labels and annotations it already carries (a Lease made by
    a Helm release keeps the marks that let `helm uninstall` remove it)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, **(kept or {})}
    if record.version:
        metadata["resourceVersion"] = record.version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": record.holder,
            "leaseDurationSeconds": record.lease_seconds,
            "renewTime": record.renew_time,
            "acquireTime": record.acquire_time,
            "leaseTransitions": record.transitions,
        },
    }


class KubeLeases:
    """The Lease object in the Kubernetes API."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self._coordination: Any = client.CoordinationV1Api(api)
        self._api = api
        self.namespace = namespace
        self.name = name
        self._kept: dict[str, Any] = {}

    def _get(self) -> LeaseRecord | None:
        try:
            found = self._coordination.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        obj = self._api.sanitize_for_serialization(found)
        metadata = obj.get("metadata") or {}
        self._kept = {k: metadata[k] for k in ("labels", "annotations") if metadata.get(k)}
        return lease_from_object(obj)

    def _put(self, record: LeaseRecord, *, create: bool) -> bool:
        body = lease_object(self.name, self.namespace, record, None if create else self._kept)
        try:
            if create:
                self._coordination.create_namespaced_lease(self.namespace, body)
            else:
                self._coordination.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # another candidate wrote first
                return False
            raise
        return True

    async def get(self) -> LeaseRecord | None:
        return await asyncio.to_thread(self._get)

    async def create(self, record: LeaseRecord) -> bool:
        return await asyncio.to_thread(self._put, record, create=True)

    async def update(self, record: LeaseRecord) -> bool:
        return await asyncio.to_thread(self._put, record, create=False)
