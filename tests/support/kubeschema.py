"""Manifests checked against a Kubernetes release's own OpenAPI document, strictly (unknown fields are
errors), the way kubeconform checks them, for releases no apiserver here runs.

The document is `api/openapi-spec/swagger.json` of the `k8s.io/kubernetes` module of that release,
from the Go module proxy (cached by Go like any module).
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

# Types the document writes as strings that manifests may also give as numbers.
_LOOSE = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": ["string", "integer"]},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": ["string", "number"]},
}


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def swagger(version: str) -> dict[str, Any]:
    env = os.environ | {"GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@v{version}"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
    ).stdout
    path = Path(json.loads(out)["Dir"]) / "api" / "openapi-spec" / "swagger.json"
    document: dict[str, Any] = json.loads(path.read_text())
    return document


class KubeSchema:
    """Validates objects of one Kubernetes release by their apiVersion and kind."""

    def __init__(self, version: str) -> None:
        self.version = version
        definitions = _strict(swagger(version)["definitions"])
        definitions.update(_LOOSE)
        self._definitions = definitions
        self._by_kind: dict[tuple[str, str], str] = {}
        for name, definition in definitions.items():
            for gvk in definition.get("x-kubernetes-group-version-kind", []):
                api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
                self._by_kind.setdefault((api_version, gvk["kind"]), name)

    def errors(self, obj: dict[str, Any]) -> list[str]:
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        name = self._by_kind.get(key)
        if name is None:
            return [f"{key[1]} {key[0]}: not served by Kubernetes {self.version}"]
        schema = {"$ref": f"#/definitions/{name}", "definitions": self._definitions}
        validator = jsonschema.Draft4Validator(schema)
        label = f"{obj['kind']} {obj.get('metadata', {}).get('name', '?')}"
        return [
            f"{label}: {'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
            for e in validator.iter_errors(obj)
        ]
