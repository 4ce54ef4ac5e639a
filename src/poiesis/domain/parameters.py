"""`resources.backend_parameters` an operator maps onto the cluster: what each key becomes.

TES 1.1 has no field for accelerators, node types, priorities or queues; workflow engines and users
put them in `backend_parameters`. An operator names the keys the deployment honours and what each
one becomes (`Parameter`); a task's values are checked against it at the door (`check`) and turned
into the Pod's placement when it is rendered (`placement`). Keys compare case-insensitively.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import msgspec

_COUNT = re.compile(r"[1-9][0-9]{0,8}")
# A Kubernetes qualified name, optionally prefixed by a DNS subdomain: resource names, label keys.
_QUALIFIED = re.compile(
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)


class Parameter(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """What one `backend_parameters` key becomes on a task's Pod.

    - `resource`: an extended resource (`name`, for example `nvidia.com/gpu`) with the value as its
      count, a whole number from 1 to `max`, set as a limit on every executor;
    - `node_label`: a node selector on the label `name`, its value one of `values`;
    - `priority_class`: the Pod's PriorityClass, one of `values`;
    - `kueue_queue`: the Kueue LocalQueue the task's Job goes to, one of `values`.
    """

    to: Literal["resource", "node_label", "priority_class", "kueue_queue"]
    name: str | None = None
    """The resource's name (`resource`) or the label's key (`node_label`)."""
    max: int | None = None
    """The largest count a task may ask for (`resource`)."""
    values: list[str] = []
    """The values a task may choose from (`node_label`, `priority_class`, `kueue_queue`)."""

    def problems(self, key: str) -> list[str]:
        """What is wrong with this mapping of `key` (empty when nothing is)."""
        where = f"backend_parameters.{key}"
        found: list[str] = []
        named = self.to in ("resource", "node_label")
        if named and not (self.name and _QUALIFIED.fullmatch(self.name)):
            found.append(f"{where}: `name` must be the {self.to.replace('_', ' ')}'s name, got {self.name!r}")
        if not named and self.name is not None:
            found.append(f"{where}: `name` has no meaning for {self.to}")
        if self.to == "resource":
            if self.max is None or self.max < 1:
                found.append(f"{where}: `max` must be the largest count a task may ask for (1 or more)")
            if self.values:
                found.append(f"{where}: a resource takes a count, not `values`")
        else:
            if self.max is not None:
                found.append(f"{where}: `max` is for resources only")
            if not self.values or any(not v or len(v) > 253 for v in self.values):
                found.append(f"{where}: `values` must list the values a task may choose")
        return found

    def check(self, value: str) -> tuple[str | None, str | None]:
        """(why the value is malformed, why it cannot be honoured): each None when it is not."""
        if self.to == "resource":
            if not _COUNT.fullmatch(value.strip()):
                return f"must be a whole number of {self.name} (1 or more), got {value!r}", None
            if int(value) > (self.max or 0):
                return None, f"asks for {int(value)} {self.name}; at most {self.max} may be asked for"
            return None, None
        if value not in self.values:
            return None, f"{value!r} is not one of {', '.join(self.values)}"
        return None, None


def lower_keys(mapping: Mapping[str, Parameter]) -> dict[str, Parameter]:
    """The mapping by lower-cased key; two keys that differ only in case are refused."""
    out: dict[str, Parameter] = {}
    for key, parameter in mapping.items():
        if key.lower() in out:
            raise ValueError(f"backend_parameters.{key}: the same key as another but for its case")
        out[key.lower()] = parameter
    return out


def mapping_problems(mapping: Mapping[str, Parameter]) -> list[str]:
    """Every problem of the operator's mapping, each naming its key."""
    found: list[str] = []
    targets: dict[tuple[str, str | None], str] = {}
    for key, parameter in mapping.items():
        found += parameter.problems(key)
        target = (parameter.to, parameter.name)
        if target in targets:
            what = parameter.name or parameter.to.replace("_", " ")
            found.append(f"backend_parameters.{key}: {what} is already mapped from {targets[target]}")
        targets[target] = key
    return found


class Placement(msgspec.Struct, frozen=True, kw_only=True):
    """What a task's honoured backend_parameters add to its Pod."""

    resources: dict[str, int] = {}
    node_labels: dict[str, str] = {}
    priority_class: str | None = None
    kueue_queue: str | None = None


def placement(given: Mapping[str, str] | None, mapping: Mapping[str, Parameter]) -> Placement:
    """The Pod's placement from a task's (already checked) backend_parameters; keys the mapping
    does not name, and values it does not honour, add nothing."""
    resources: dict[str, int] = {}
    labels: dict[str, str] = {}
    priority, queue = None, None
    for key, value in (given or {}).items():
        parameter = mapping.get(key.lower())
        if parameter is None or parameter.check(value) != (None, None):
            continue
        if parameter.to == "resource" and parameter.name:
            resources[parameter.name] = int(value)
        elif parameter.to == "node_label" and parameter.name:
            labels[parameter.name] = value
        elif parameter.to == "priority_class":
            priority = value
        elif parameter.to == "kueue_queue":
            queue = value
    return Placement(resources=resources, node_labels=labels, priority_class=priority, kueue_queue=queue)
