"""A task's TES JSON document in each view, rendered by PostgreSQL.

A GET or a page on PostgreSQL is one statement whose rows are the documents themselves: the API
sends their bytes as they come, with nothing decoded or encoded in Python. Each expression renders
exactly what `domain.views.render` makes of `rows.task_from_row` (the store contract suite compares
the two for every view): fields without a value are left out (`json_strip_nulls`), executor logs
without an exit code never appear, the BASIC view leaves out input content, executor stdout/stderr
and system logs, and the FULL view shows the owner in the first task log's metadata. Times are RFC
3339 in UTC to the microsecond, as `domain.times.rfc3339` writes them.

The expressions are SQL text correlated with the `task` table of the enclosing statement (no
SQLAlchemy here: the recorder sends them through asyncpg alone). The BASIC document, what GET and
ListTasks send by default, is also kept in `task.basic_document` (`refresh`, and the triggers of
migration 0003 that clear it on any other write), so a page is read, not rendered.
"""

from __future__ import annotations

import functools

from poiesis.domain.principal import OWNER_KEY
from poiesis.domain.tes import View


def _time(column: str) -> str:
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def _json(column: str) -> str:
    """A JSONB column, with a stored JSON null taken as no value."""
    return f"NULLIF({column}, 'null'::jsonb)"


def _agg(fields: str, source: str, order: str) -> str:
    return f"(SELECT json_agg(json_build_object({fields}) ORDER BY {order}) FROM {source})"


@functools.cache
def expression(view: View, *, stored: bool = False) -> str:
    """The task's document in `view`, as text; `stored`: the FULL view as the store holds the task
    (`TaskStore.get`: the owner as a field of its own, not in the metadata)."""
    if view is View.MINIMAL:
        return "json_build_object('id', task.id, 'state', task.state)::text"
    full = view is View.FULL
    owned = full and not stored
    executors = _agg(
        "'image', e.image, 'command', e.command, 'workdir', e.workdir, 'stdin', e.stdin, 'stdout', e.stdout,"
        f" 'stderr', e.stderr, 'env', {_json('e.env')}, 'ignore_error', e.ignore_error",
        "executor e WHERE e.task_id = task.id",
        "e.idx",
    )
    content = " 'content', i.content," if full else ""
    inputs = _agg(
        "'path', i.path, 'type', i.type, 'name', i.name, 'description', i.description, 'url', i.url,"
        f"{content} 'streamable', i.streamable",
        "input i WHERE i.task_id = task.id",
        "i.idx",
    )
    outputs = _agg(
        "'path', o.path, 'url', o.url, 'type', o.type, 'name', o.name, 'description', o.description,"
        " 'path_prefix', o.path_prefix",
        "output o WHERE o.task_id = task.id",
        "o.idx",
    )
    resources = (
        "CASE WHEN num_nonnulls(task.cpu_cores, task.preemptible, task.ram_gb, task.disk_gb,"
        f" {_json('task.zones')}, {_json('task.backend_parameters')}, task.backend_parameters_strict) > 0"
        " THEN json_build_object('cpu_cores', task.cpu_cores, 'preemptible', task.preemptible,"
        " 'ram_gb', task.ram_gb, 'disk_gb', task.disk_gb, 'zones', task.zones,"
        " 'backend_parameters', task.backend_parameters,"
        " 'backend_parameters_strict', task.backend_parameters_strict) END"
    )
    streams = ", 'stdout', x.stdout, 'stderr', x.stderr" if full else ""
    executor_logs = _agg(
        f"'exit_code', x.exit_code, 'start_time', {_time('x.start_time')}, 'end_time', {_time('x.end_time')}"
        f"{streams}",
        "executor_log x WHERE x.task_id = l.task_id AND x.attempt = l.attempt AND x.exit_code IS NOT NULL",
        "x.idx",
    )
    files = _agg(
        "'url', f.url, 'path', f.path, 'size_bytes', f.size_bytes::text",
        "output_file_log f WHERE f.task_id = l.task_id AND f.attempt = l.attempt",
        "f.id",
    )
    metadata = f"NULLIF(COALESCE({_json('l.metadata')}, '{{}}'::jsonb), '{{}}'::jsonb)"
    owner = f"jsonb_build_object('{OWNER_KEY}', task.owner)"
    system = ""
    if full:
        lines = "(SELECT json_agg(s.line ORDER BY s.id) FROM system_log s"
        system = f", 'system_logs', {lines} WHERE s.task_id = l.task_id AND s.attempt = l.attempt)"
    if owned:
        # The owner joins the first log's metadata; a task with no log yet is given one for it.
        first = "l.attempt = (SELECT min(l0.attempt) FROM task_log l0 WHERE l0.task_id = task.id)"
        with_owner = f"COALESCE({_json('l.metadata')}, '{{}}'::jsonb) || {owner}"
        metadata = f"CASE WHEN {first} THEN {with_owner} ELSE {metadata} END"
    logs = _agg(
        f"'logs', COALESCE({executor_logs}, '[]'::json), 'outputs', COALESCE({files}, '[]'::json),"
        f" 'metadata', {metadata}, 'start_time', {_time('l.start_time')}, 'end_time', {_time('l.end_time')}"
        f"{system}",
        "task_log l WHERE l.task_id = task.id",
        "l.attempt",
    )
    if owned:
        empty = "'logs', '[]'::json, 'outputs', '[]'::json"
        alone = f"json_build_array(json_build_object({empty}, 'metadata', {owner}))"
        logs = f"COALESCE({logs}, {alone})"
    owner_field = ", 'owner', task.owner" if stored else ""
    return (
        "json_strip_nulls(json_build_object("
        f"'id', task.id, 'state', task.state, 'executors', {executors},"
        f" 'creation_time', {_time('task.created_at')}, 'name', task.name, 'description', task.description,"
        f" 'inputs', {inputs}, 'outputs', {outputs}, 'resources', {resources},"
        f" 'volumes', {_json('task.volumes')}, 'tags', NULLIF(task.tags, '{{}}'::jsonb), 'logs', {logs}"
        f"{owner_field}"
        "))::text"
    )


def read(view: View) -> str:
    """The document a read sends: the BASIC one as the row keeps it, rendered only when a write has
    cleared it."""
    if view is View.BASIC:
        return f"COALESCE(task.basic_document, {expression(view)})"
    return expression(view)


def refresh(task_id: str) -> str:
    """The writers' last statement in a transaction that changed a task: its BASIC document again.
    `task_id`: the parameter's placeholder (`:task_id`, `$1`)."""
    return f"UPDATE task SET basic_document = {expression(View.BASIC)} WHERE task.id = {task_id}"
