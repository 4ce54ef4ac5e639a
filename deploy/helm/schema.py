"""Writes deploy/helm/poiesis/values.schema.json: the chart's own values, and under `config` the
Poiesis settings as the application defines them (`Settings`), so `helm install` refuses a
misspelt or mistyped setting before any Pod starts. tests/unit/test_chart.py keeps the file current.

    uv run python deploy/helm/schema.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from poiesis.entrypoints.settings import Settings

OUT = Path(__file__).parent / "poiesis" / "values.schema.json"

# Settings the chart wires itself (from its other values): refused under `config`.
OWNED = {
    "Settings": {
        "database_url",
        "host",
        "port",
        "backend",
        "kubeconfig",
        "migrate_on_start",
        "basic_users_file",
    },
    "PodSettings": {"namespace", "image", "image_pull_policy", "database_secret", "storage_secret"},
}


def _closed(schema: Any) -> Any:
    """Every object of the settings refuses unknown keys, as the application does."""
    if isinstance(schema, dict):
        schema = {k: _closed(v) for k, v in schema.items() if k not in ("title", "default")}
        if schema.get("type") == "object" and "properties" in schema:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def settings_defs() -> dict[str, Any]:
    defs: dict[str, Any] = msgspec.json.schema(Settings)["$defs"]
    for name, owned in OWNED.items():
        props = defs[name]["properties"]
        for key in owned:
            del props[key]
        defs[name]["required"] = [r for r in defs[name].get("required", []) if r not in owned]
        if not defs[name]["required"]:
            del defs[name]["required"]
    return {name: _closed(d) for name, d in defs.items()}


def string(description: str = "") -> dict[str, Any]:
    return {"type": "string", **({"description": description} if description else {})}


def obj(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties, **extra}


def anything(kind: str) -> dict[str, Any]:
    """A Kubernetes structure passed through as it is (resources, tolerations, affinity, ...)."""
    return {"type": kind}


def pdb() -> dict[str, Any]:
    return obj(
        {"enabled": {"type": "boolean"}, "minAvailable": {"type": ["integer", "string"]}},
        required=["enabled", "minAvailable"],
    )


def placement() -> dict[str, Any]:
    return {
        "resources": anything("object"),
        "podAnnotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
        "tolerations": anything("array"),
        "affinity": anything("object"),
    }


def account() -> dict[str, Any]:
    return obj(
        {"name": string(), "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}
    )


def port() -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": 65535}


def cidr() -> dict[str, Any]:
    return {"type": "string", "pattern": "^[0-9a-fA-F.:]+/[0-9]{1,3}$"}


def peers() -> dict[str, Any]:
    """NetworkPolicy peers as Kubernetes writes them; an ipBlock's CIDR is checked here, the rest
    by the apiserver."""
    return {
        "type": "array",
        "items": {
            "type": "object",
            "minProperties": 1,
            "properties": {
                "ipBlock": obj(
                    {"cidr": cidr(), "except": {"type": "array", "items": cidr()}}, required=["cidr"]
                ),
                "namespaceSelector": anything("object"),
                "podSelector": anything("object"),
            },
            "additionalProperties": False,
        },
    }


def ports() -> dict[str, Any]:
    return {
        "type": "array",
        "items": obj(
            {
                "port": {"type": ["integer", "string"]},
                "endPort": port(),
                "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
            }
        ),
    }


def chart_schema() -> dict[str, Any]:
    replicas = {"type": "integer", "minimum": 0}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Values of the Poiesis chart",
        **obj(
            {
                "image": obj(
                    {
                        "repository": {"type": "string", "minLength": 1},
                        "tag": string("Default: the chart's appVersion."),
                        "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                    },
                    required=["repository"],
                ),
                "imagePullSecrets": {"type": "array", "items": {"type": "string"}},
                "database": obj(
                    {
                        "existingSecret": string(),
                        "existingSecretKey": {"type": "string", "minLength": 1},
                        "url": {"type": "string", "pattern": "^(|postgres(ql)?(\\+asyncpg)?://.+)$"},
                    }
                ),
                "postgresql": obj(
                    {
                        "enabled": {"type": "boolean"},
                        "image": {"type": "string", "minLength": 1},
                        "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                        "storage": obj({"size": {"type": "string"}, "storageClass": string()}),
                        "resources": anything("object"),
                    }
                ),
                "tasks": obj(
                    {
                        "namespace": string(),
                        "databaseSecret": string(),
                        "storage": obj({"existingSecret": string(), "endpoints": string()}),
                    }
                ),
                "config": {"$ref": "#/$defs/Settings"},
                "networkPolicy": obj(
                    {
                        "enabled": {"type": "boolean"},
                        "tasks": obj(
                            {
                                "dns": obj({"to": peers(), "ports": ports()}),
                                "apiServer": obj(
                                    {
                                        "cidrs": {"type": "array", "items": cidr()},
                                        "ports": {"type": "array", "items": port()},
                                    }
                                ),
                                "database": obj({"to": peers(), "ports": ports()}),
                                "storage": {
                                    "type": "array",
                                    "items": obj({"to": peers(), "ports": ports()}, required=["to"]),
                                },
                                "publicEgress": obj(
                                    {
                                        "enabled": {"type": "boolean"},
                                        "except": {"type": "array", "items": cidr()},
                                    }
                                ),
                            }
                        ),
                        "api": obj({"from": peers()}),
                        "metrics": obj({"from": peers()}),
                    }
                ),
                "basicUsers": obj({"existingSecret": string(), "content": string()}),
                "metrics": obj({"annotations": {"type": "boolean"}}),
                "api": obj(
                    {
                        "replicas": replicas,
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        **placement(),
                        "podDisruptionBudget": pdb(),
                        "service": obj(
                            {
                                "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                            }
                        ),
                        "ingress": obj(
                            {
                                "enabled": {"type": "boolean"},
                                "className": string(),
                                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                                "hosts": {
                                    "type": "array",
                                    "items": obj(
                                        {
                                            "host": string(),
                                            "paths": {
                                                "type": "array",
                                                "items": obj(
                                                    {
                                                        "path": string(),
                                                        "pathType": {
                                                            "enum": [
                                                                "Prefix",
                                                                "Exact",
                                                                "ImplementationSpecific",
                                                            ]
                                                        },
                                                    },
                                                    required=["path", "pathType"],
                                                ),
                                            },
                                        },
                                        required=["host", "paths"],
                                    ),
                                },
                                "tls": anything("array"),
                            }
                        ),
                    }
                ),
                "tctl": obj({"replicas": replicas, **placement(), "podDisruptionBudget": pdb()}),
                "migrate": obj(
                    {
                        "backoffLimit": {"type": "integer", "minimum": 0},
                        "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                        "resources": anything("object"),
                        "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
                        "tolerations": anything("array"),
                    }
                ),
                "serviceAccounts": obj({"api": account(), "tctl": account()}),
                "tests": obj(
                    {
                        "executorImage": {"type": "string", "minLength": 1},
                        "authSecret": string(),
                        "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
                    }
                ),
                "global": {"type": "object"},
            }
        ),
        "$defs": settings_defs(),
    }


def render() -> str:
    return json.dumps(chart_schema(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
