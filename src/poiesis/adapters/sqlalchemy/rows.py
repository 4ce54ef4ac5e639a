"""A task as rows and back: the child rows a create writes (one PostgreSQL statement for all of
them), and the one statement per view that reads tasks with their children aggregated as JSON."""

from __future__ import annotations

import functools
from typing import Any

import msgspec
import sqlalchemy as sa

from poiesis.adapters.sqlalchemy import schema as t
from poiesis.adapters.sqlalchemy.documents import (
    ExecutorLogRow,
    LogRow,
    OutputFileRow,
    SystemLogRow,
    decode_rows,
    json_rows,
)
from poiesis.domain.states import State
from poiesis.domain.tes import (
    Executor,
    ExecutorLog,
    Input,
    Output,
    OutputFileLog,
    Resources,
    Task,
    TaskLog,
    View,
)
from poiesis.domain.times import parse_time, rfc3339
from poiesis.domain.views import encoded


def time_text(value: str | None) -> str | None:
    return None if value is None else rfc3339(parse_time(value))


SLICE = 500
CHILD_TABLES = {"executors": t.executor, "inputs": t.input_, "outputs": t.output, "tag_rows": t.tag}
TASK_JSON = ("volumes", "tags", "zones", "backend_parameters")


def children(task: Task) -> dict[str, list[dict[str, Any]]]:
    """The child rows of a task, keyed like the JSON parameters of `CREATE_POSTGRES`."""
    return {
        "executors": [{"idx": i} | msgspec.to_builtins(e) for i, e in enumerate(task.executors)],
        "inputs": [{"idx": i} | msgspec.to_builtins(x) for i, x in enumerate(task.inputs or [])],
        "outputs": [{"idx": i} | msgspec.to_builtins(x) for i, x in enumerate(task.outputs or [])],
        "tag_rows": [{"key": k, "value": v} for k, v in (task.tags or {}).items()],
    }


def task_row(task: Task, owner: str, *, document: bool) -> dict[str, Any]:
    """The `task` row of a task to create: one column per resource field; its BASIC document kept
    when `document` (a task created with system logs has a task log, which the document shows)."""
    row: dict[str, Any] = {
        "id": task.id,
        "owner": owner,
        "state": task.state,
        "created_at": parse_time(task.creation_time),
        "name": task.name,
        "description": task.description,
        "volumes": task.volumes,
        "tags": task.tags or {},
        "basic_document": basic_document(task) if document else None,
    }
    return row | msgspec.structs.asdict(task.resources or Resources())


def basic_document(task: Task) -> str:
    """The BASIC document of a task as `create` stores it with no system logs (so no task log yet):
    the task itself, rendered."""
    return encoded(msgspec.structs.replace(task, logs=None), View.BASIC).decode()


def to_json(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


# A task and its children in one statement, one round trip: the children travel as JSON arrays.
# The foreign keys are checked at the end of the statement, when the task row exists. The `tag`
# rows are SQLite's tag filter: PostgreSQL filters on `task.tags` (a GIN index) and writes none.
CREATE_POSTGRES = sa.text(
    """
WITH new_task AS (
  INSERT INTO task (id, owner, state, created_at, name, description, volumes, tags, cpu_cores, ram_gb,
                    disk_gb, preemptible, zones, backend_parameters, backend_parameters_strict,
                    basic_document)
  VALUES (:id, :owner, CAST(:state AS task_state), :created_at, :name, :description, CAST(:volumes AS jsonb),
          CAST(:tags AS jsonb), :cpu_cores, :ram_gb, :disk_gb, :preemptible, CAST(:zones AS jsonb),
          CAST(:backend_parameters AS jsonb), :backend_parameters_strict, :basic_document)
), new_executor AS (
  INSERT INTO executor (task_id, idx, image, command, workdir, stdin, stdout, stderr, env, ignore_error)
  SELECT :id, x.idx, x.image, x.command, x.workdir, x.stdin, x.stdout, x.stderr, x.env, x.ignore_error
  FROM jsonb_to_recordset(CAST(:executors AS jsonb)) AS x(idx int, image text, command jsonb, workdir text,
       stdin text, stdout text, stderr text, env jsonb, ignore_error boolean)
), new_input AS (
  INSERT INTO input (task_id, idx, path, type, name, description, url, content, streamable)
  SELECT :id, x.idx, x.path, CAST(x.type AS file_type), x.name, x.description, x.url, x.content, x.streamable
  FROM jsonb_to_recordset(CAST(:inputs AS jsonb)) AS x(idx int, path text, type text, name text,
       description text, url text, content text, streamable boolean)
)
INSERT INTO output (task_id, idx, path, url, type, name, description, path_prefix)
SELECT :id, x.idx, x.path, x.url, CAST(x.type AS file_type), x.name, x.description, x.path_prefix
FROM jsonb_to_recordset(CAST(:outputs AS jsonb)) AS x(idx int, path text, url text, type text, name text,
     description text, path_prefix text)
"""
)

# Tasks created together (group commit) in one statement: the group travels as one JSON array of
# tasks, each with its children. One statement instead of one per task saves PostgreSQL the
# per-statement work (a plan, an executor and four inserts' start and end) of all but one.
CREATE_POSTGRES_GROUP = sa.text(
    """
WITH new AS MATERIALIZED (
  SELECT * FROM jsonb_to_recordset(CAST(:tasks AS jsonb)) AS x(id text, owner text, state task_state,
       created_at timestamptz, name text, description text, volumes jsonb, tags jsonb, cpu_cores int,
       ram_gb float8, disk_gb float8, preemptible boolean, zones jsonb, backend_parameters jsonb,
       backend_parameters_strict boolean, basic_document text, executors jsonb, inputs jsonb,
       outputs jsonb)
), new_task AS (
  INSERT INTO task (id, owner, state, created_at, name, description, volumes, tags, cpu_cores, ram_gb,
                    disk_gb, preemptible, zones, backend_parameters, backend_parameters_strict,
                    basic_document)
  SELECT id, owner, state, created_at, name, description, volumes, tags, cpu_cores, ram_gb, disk_gb,
         preemptible, zones, backend_parameters, backend_parameters_strict, basic_document
  FROM new
), new_executor AS (
  INSERT INTO executor (task_id, idx, image, command, workdir, stdin, stdout, stderr, env, ignore_error)
  SELECT new.id, x.idx, x.image, x.command, x.workdir, x.stdin, x.stdout, x.stderr, x.env, x.ignore_error
  FROM new, jsonb_to_recordset(new.executors) AS x(idx int, image text, command jsonb, workdir text,
       stdin text, stdout text, stderr text, env jsonb, ignore_error boolean)
), new_input AS (
  INSERT INTO input (task_id, idx, path, type, name, description, url, content, streamable)
  SELECT new.id, x.idx, x.path, CAST(x.type AS file_type), x.name, x.description, x.url, x.content,
         x.streamable
  FROM new, jsonb_to_recordset(new.inputs) AS x(idx int, path text, type text, name text,
       description text, url text, content text, streamable boolean)
)
INSERT INTO output (task_id, idx, path, url, type, name, description, path_prefix)
SELECT new.id, x.idx, x.path, x.url, CAST(x.type AS file_type), x.name, x.description, x.path_prefix
FROM new, jsonb_to_recordset(new.outputs) AS x(idx int, path text, url text, type text, name text,
     description text, path_prefix text)
"""
)

# The resource columns are named as the fields of tesResources.
_RESOURCES = Resources.__struct_fields__
_TASK_COLUMNS = (
    "id",
    "state",
    "created_at",
    "name",
    "description",
    *_RESOURCES,
    "volumes",
    "tags",
)
_EXECUTOR = ["image", "command", "workdir", "stdin", "stdout", "stderr", "env", "ignore_error"]
_INPUT = ["path", "type", "name", "description", "url", "streamable"]
_OUTPUT = ["path", "url", "type", "name", "description", "path_prefix"]
_LOG = ["attempt", "start_time", "end_time", "metadata"]
_EXECUTOR_LOG = ["attempt", "idx", "exit_code", "start_time", "end_time"]
_OUTPUT_FILE = ["attempt", "url", "path", "size_bytes"]


@functools.cache
def details(view: View) -> sa.Select[Any]:
    """The tasks whose ids are bound to `ids`, newest first, with what `view` shows, in one statement.

    Built once per view: constructing it costs far more than running it. Each child table arrives as
    one JSON array per task, aggregated only for the tasks asked for.
    """
    c = t.task.c
    columns = ("id", "state", "owner") if view is View.MINIMAL else (*_TASK_COLUMNS, "owner")
    page = (
        sa.select(*(c[n] for n in columns))
        .where(c.id.in_(sa.bindparam("ids", expanding=True)))
        .subquery("page")
    )
    if view is View.MINIMAL:
        return sa.select(*page.c).order_by(page.c.id.desc())
    full = view is View.FULL
    children = [
        json_rows(t.executor, _EXECUTOR, page, "idx").label("executors"),
        json_rows(t.input_, [*_INPUT, "content"] if full else _INPUT, page, "idx").label("inputs"),
        json_rows(t.output, _OUTPUT, page, "idx").label("outputs"),
        json_rows(t.task_log, _LOG, page, "attempt").label("logs"),
        json_rows(
            t.executor_log, [*_EXECUTOR_LOG, "stdout", "stderr"] if full else _EXECUTOR_LOG, page, "idx"
        ).label("executor_logs"),
        json_rows(t.output_file_log, _OUTPUT_FILE, page, "id").label("output_files"),
    ]
    if full:
        children.append(json_rows(t.system_log, ["attempt", "line"], page, "id").label("system_logs"))
    return sa.select(*page.c, *children).order_by(page.c.id.desc())


def task_from_row(r: Any, view: View) -> Task:
    if view is View.MINIMAL:
        # Only id and state are loaded; the view renders nothing else.
        return Task(id=r.id, state=State(r.state), executors=[], creation_time="")
    full = view is View.FULL
    executor_logs: list[ExecutorLogRow] = decode_rows(r.executor_logs, ExecutorLogRow)
    files: list[OutputFileRow] = decode_rows(r.output_files, OutputFileRow)
    system: list[SystemLogRow] = decode_rows(r.system_logs, SystemLogRow) if full else []
    logs = [
        TaskLog(
            logs=[
                ExecutorLog(
                    exit_code=e.exit_code,
                    start_time=time_text(e.start_time),
                    end_time=time_text(e.end_time),
                    stdout=e.stdout,
                    stderr=e.stderr,
                )
                for e in executor_logs
                if e.attempt == log.attempt and e.exit_code is not None
            ],
            outputs=[
                OutputFileLog(url=f.url, path=f.path, size_bytes=str(f.size_bytes))
                for f in files
                if f.attempt == log.attempt
            ],
            metadata=log.metadata or None,
            start_time=time_text(log.start_time),
            end_time=time_text(log.end_time),
            system_logs=[s.line for s in system if s.attempt == log.attempt] or None,
        )
        for log in decode_rows(r.logs, LogRow)
    ]
    resources = Resources(**{name: getattr(r, name) for name in _RESOURCES})
    return Task(
        id=r.id,
        owner=r.owner,
        state=State(r.state),
        creation_time=rfc3339(r.created_at),
        name=r.name,
        description=r.description,
        executors=decode_rows(r.executors, Executor),
        inputs=decode_rows(r.inputs, Input) or None,
        outputs=decode_rows(r.outputs, Output) or None,
        resources=resources if resources != Resources() else None,
        volumes=r.volumes,
        tags=r.tags or None,
        logs=logs or None,
    )


def basic_document_of(row: Any) -> bytes:
    """The BASIC document of the task in a row of `details(View.BASIC)`, rendered here (SQLite)."""
    return encoded(task_from_row(row, View.BASIC), View.BASIC)
