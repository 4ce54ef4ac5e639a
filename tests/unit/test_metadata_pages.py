"""Metadata-only lists of the task objects: paged by the apiserver's continue token, and decoded as
far as the metadata the adapters read (the managed fields and the rest skipped)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from poiesis.adapters.kubernetes.cluster import METADATA_LIST, metadata_pages


def item(name: str, task: str | None) -> dict[str, Any]:
    labels = {"poiesis.io/task": task} if task else {"app": "other"}
    managed = [{"manager": "m", "fieldsV1": {"f:spec": {f"f:{i}": {} for i in range(50)}}}]
    owners = [{"kind": "Job", "name": f"tes-{task}", "uid": "u-1", "controller": True}]
    return {"metadata": {"name": name, "labels": labels, "ownerReferences": owners, "managedFields": managed}}


def test_every_page_is_read_in_turn_with_the_servers_token() -> None:
    served = {
        None: {
            "metadata": {"continue": "t1", "resourceVersion": "7"},
            "items": [item("a", "x"), item("b", None)],
        },
        "t1": {"metadata": {"continue": "t2", "resourceVersion": "7"}, "items": []},
        "t2": {"metadata": {"resourceVersion": "9"}, "items": [item("c", "y")]},
    }
    calls: list[dict[str, Any]] = []

    def list_objects(namespace: str, **kwargs: Any) -> SimpleNamespace:
        calls.append({"namespace": namespace} | kwargs)
        return SimpleNamespace(data=json.dumps(served[kwargs.get("_continue")]).encode())

    pages = list(metadata_pages(list_objects, "ns"))
    assert [c.get("_continue") for c in calls] == [None, "t1", "t2"]
    assert all(
        c["_headers"] == {"Accept": METADATA_LIST} and c["label_selector"] == "poiesis.io/task" for c in calls
    )
    names = [i.metadata.name for p in pages for i in p.items or ()]
    assert names == ["a", "b", "c"]
    first = pages[0].items[0].metadata  # type: ignore[index]
    assert first.labels == {"poiesis.io/task": "x"}
    assert first.owner_references is not None
    assert first.owner_references[0].uid == "u-1"
    assert pages[-1].metadata.resource_version == "9"
