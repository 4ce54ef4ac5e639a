"""`poiesis task ...`: a command-line client of a TES v1.1.0 server (Poiesis or any other).

The server, and the credentials for it, come from flags, else the environment (`POIESIS_URL`,
`POIESIS_TOKEN`, `POIESIS_USER`, `POIESIS_PASSWORD`, `POIESIS_CA_BUNDLE`), else the client
configuration file (`POIESIS_CLIENT_CONFIG`, default `~/.config/poiesis/client.toml`, keys `url`,
`token`, `user`, `password`, `ca_bundle`). A configuration file holding a secret must be readable by
its owner only, as ssh asks of its keys.

Every command prints a table for people or, with `--output json`, the server's JSON for scripts. A
failure is one line on stderr (`poiesis: ...`), never a traceback. Exit statuses (EXIT_* below):
0 success, 1 a request failed, 2 bad usage; `wait` (and `submit --wait`) exit by the task's end state,
so a script can branch on them.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import click
import httpx
import yaml
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from poiesis.domain.hosts import is_loopback
from poiesis.domain.states import TERMINAL, State

API = "/ga4gh/tes/v1"
DEFAULT_URL = "http://127.0.0.1:8000"

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 124
EXIT_BY_STATE: dict[str, int] = {
    State.COMPLETE: 0,
    State.EXECUTOR_ERROR: 10,
    State.SYSTEM_ERROR: 11,
    State.CANCELED: 12,
    State.PREEMPTED: 13,
}
"""`wait`'s exit status by the task's end state (the first task that did not complete decides)."""

_TERMINAL_NAMES = frozenset(str(s) for s in TERMINAL)
_STATE_STYLE = {
    "COMPLETE": "green",
    "EXECUTOR_ERROR": "red",
    "SYSTEM_ERROR": "red",
    "CANCELED": "yellow",
    "CANCELING": "yellow",
    "PREEMPTED": "yellow",
    "RUNNING": "cyan",
    "INITIALIZING": "cyan",
}


class ClientError(Exception):
    """A failure to show the user in one line."""


@dataclass(frozen=True)
class Profile:
    url: str
    token: str | None = None
    user: str | None = None
    password: str | None = None
    ca_bundle: str | None = None


def config_path(environ: Mapping[str, str]) -> Path:
    explicit = environ.get("POIESIS_CLIENT_CONFIG")
    if explicit:
        return Path(explicit)
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "poiesis" / "client.toml"


def read_config(path: Path, *, required: bool) -> dict[str, str]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ClientError(f"{path}: no such file") from None
        return {}
    except OSError as exc:
        raise ClientError(f"{path}: {exc.strerror}") from None
    try:
        values = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ClientError(f"{path}: not TOML: {exc}") from None
    known = {"url", "token", "user", "password", "ca_bundle"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ClientError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    if not all(isinstance(v, str) for v in values.values()):
        raise ClientError(f"{path}: every value must be a string")
    if ("token" in values or "password" in values) and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ClientError(f"{path} holds a secret and others may read it: chmod 600 {path}")
    return values


def resolve_profile(flags: Mapping[str, str | None], environ: Mapping[str, str]) -> Profile:
    """Flags first, then `POIESIS_*` variables, then the configuration file."""
    explicit = flags.get("config")
    file = read_config(Path(explicit) if explicit else config_path(environ), required=bool(explicit))

    def pick(name: str) -> str | None:
        return flags.get(name) or environ.get(f"POIESIS_{name.upper()}") or file.get(name)

    url = (pick("url") or DEFAULT_URL).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"--url: {url!r} is not an http(s) URL")
    if url.endswith(API):
        url = url[: -len(API)]
    token, user = pick("token"), pick("user")
    if token and user:
        raise ClientError("give a token or a user, not both")
    return Profile(url=url, token=token, user=user, password=pick("password"), ca_bundle=pick("ca_bundle"))


class TesClient:
    """The TES REST API over httpx, every failure turned into a one-line ClientError."""

    def __init__(self, profile: Profile, *, timeout: float = 30.0) -> None:
        headers = {"User-Agent": "poiesis-cli", "Accept": "application/json"}
        auth: httpx.Auth | None = None
        if profile.token:
            headers["Authorization"] = f"Bearer {profile.token}"
        elif profile.user:
            if profile.password is None:
                raise ClientError(f"no password for {profile.user}: set POIESIS_PASSWORD or the config file")
            auth = httpx.BasicAuth(profile.user, profile.password)
        parts = urlsplit(profile.url)
        if (
            (profile.token or profile.user)
            and parts.scheme == "http"
            and not is_loopback(parts.hostname or "")
        ):
            click.echo(f"poiesis: warning: sending credentials unencrypted to {parts.hostname}", err=True)
        self.url = profile.url
        self._http = httpx.Client(
            base_url=profile.url + API,
            headers=headers,
            auth=auth,
            timeout=timeout,
            verify=profile.ca_bundle or True,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, *, what: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ClientError(f"{self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.url}: {_reason(exc)}") from None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise ClientError(f"{self.url} answered {what} with something that is not JSON") from None
        raise ClientError(_refusal(response, what))

    def create(self, task: Mapping[str, Any]) -> str:
        body = json.dumps(task).encode()
        answer = self.call(
            "POST", "/tasks", what="the task", content=body, headers={"Content-Type": "application/json"}
        )
        return str(answer["id"])

    def list(self, params: list[tuple[str, str]]) -> dict[str, Any]:
        return dict(self.call("GET", "/tasks", what="the listing", params=params))

    def get(self, task_id: str, view: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/tasks/{_segment(task_id)}", what=task_id, params={"view": view}))

    def cancel(self, task_id: str) -> None:
        self.call(
            "POST",
            f"/tasks/{_segment(task_id)}:cancel",
            what=task_id,
            content=b"{}",
            headers={"Content-Type": "application/json"},
        )


def _segment(task_id: str) -> str:
    if not task_id or "/" in task_id or any(c in task_id for c in "?#%") or not task_id.isprintable():
        raise ClientError(f"{task_id!r} is not a task id")
    return task_id


def _reason(exc: httpx.HTTPError) -> str:
    cause: BaseException = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    text = str(cause) or type(cause).__name__
    if isinstance(cause, OSError) and cause.strerror:
        text = cause.strerror
    return text.splitlines()[0][:200]


def _refusal(response: httpx.Response, what: str) -> str:
    msg = None
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict):
            msg = body.get("msg") or body.get("message") or body.get("detail")
    if response.status_code == 404 and what not in ("the task", "the listing"):
        return f"task {what} not found"
    if response.status_code == 401:
        return (
            f"{response.url.host} asks for credentials ({msg or 'unauthenticated'}): give --token or --user"
        )
    text = str(msg) if msg else response.reason_phrase
    return f"{response.status_code} {text}"[:400]


# ---------------------------------------------------------------------------------------------
# Output


@dataclass
class Out:
    json: bool
    console: Console
    errors: Console

    def data(self, value: Any) -> None:
        click.echo(json.dumps(value, indent=2))

    def state(self, state: str) -> str:
        style = _STATE_STYLE.get(state)
        return f"[{style}]{state}[/]" if style else _plain(state)


def _console(stream: Any) -> Console:
    # Piped output is for other programs: no colour, and wide enough that no id is cut.
    tty = stream.isatty()
    return Console(file=stream, width=None if tty else 200, no_color=not tty, highlight=False)


def _task_table(out: Out, tasks: Sequence[Mapping[str, Any]]) -> Table:
    owners = any("owner" in t for t in tasks)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("NAME", overflow="fold")
    table.add_column("CREATED", no_wrap=True)
    if owners:
        table.add_column("OWNER")
    for t in tasks:
        row = [t["id"], out.state(t["state"]), _plain(t.get("name", "")), t.get("creation_time", "")]
        if owners:
            row.append(_plain(t.get("owner", "")))
        table.add_row(*row)
    return table


def _printable(text: Any, keep: str = "\n") -> str:
    """Text from the server with its terminal control characters (escape sequences that could
    retitle, recolour or write the clipboard of the user's terminal) replaced."""
    return "".join(c if c.isprintable() or c in keep else "\ufffd" for c in str(text))


def _plain(text: Any) -> str:
    """Text from the server for a rich table: control characters and rich markup defused."""
    from rich.markup import escape

    return escape(_printable(text))


def _show_task(out: Out, task: Mapping[str, Any]) -> None:
    console = out.console
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("id", task["id"])
    head.add_row("state", out.state(task["state"]))
    for key in ("name", "description", "owner", "creation_time"):
        if task.get(key):
            head.add_row(key.replace("_", " "), _plain(task[key]))
    if task.get("tags"):
        head.add_row("tags", _plain(", ".join(f"{k}={v}" for k, v in task["tags"].items())))
    resources = task.get("resources") or {}
    if resources:
        head.add_row("resources", _plain(", ".join(f"{k}={v}" for k, v in resources.items())))
    logs = (task.get("logs") or [{}])[-1]
    for key in ("start_time", "end_time"):
        if logs.get(key):
            head.add_row(key.replace("_", " "), logs[key])
    console.print(head)

    runs = logs.get("logs") or []
    executors = task.get("executors") or []
    if executors:
        table = Table(title="executors", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("#", "IMAGE", "COMMAND", "EXIT", "START", "END"):
            table.add_column(column, overflow="fold")
        for i, executor in enumerate(executors):
            run = runs[i] if i < len(runs) else {}
            exit_code = run.get("exit_code")
            table.add_row(
                str(i),
                _plain(executor.get("image", "")),
                _plain(" ".join(executor.get("command", []))),
                "" if exit_code is None else str(exit_code),
                run.get("start_time", ""),
                run.get("end_time", ""),
            )
        console.print(table)
    files = [("in", i.get("url") or "(content)", i.get("path", ""), "") for i in task.get("inputs") or []]
    sizes = {o.get("url"): o.get("size_bytes", "") for o in logs.get("outputs") or []}
    files += [("out", o["url"], o["path"], sizes.get(o["url"], "")) for o in task.get("outputs") or []]
    if files:
        table = Table(title="files", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("", "URL", "PATH", "BYTES"):
            table.add_column(column, overflow="fold")
        for row in files:
            table.add_row(*(_plain(x) for x in row))
        console.print(table)
    for line in logs.get("system_logs") or []:
        console.print(f"[dim]system:[/] {_plain(line)}")


# ---------------------------------------------------------------------------------------------
# Commands

_FORMAT = click.Choice(["table", "json"])


def _formatted(command: Any) -> Any:
    """`-o/--output` after the command name too (`poiesis task list -o json`)."""

    def apply(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.obj[1].json = value == "json"

    return click.option(
        "-o",
        "--output",
        "output_format",
        type=_FORMAT,
        expose_value=False,
        callback=apply,
        help="table or json",
    )(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--url", help=f"the TES server [env POIESIS_URL; default {DEFAULT_URL}]")
@click.option("--token", help="a bearer token [env POIESIS_TOKEN]")
@click.option("--user", help="a basic-auth user; the password from POIESIS_PASSWORD or the config file")
@click.option("--ca-bundle", type=click.Path(dir_okay=False), help="CA certificates to trust for https")
@click.option("--config", type=click.Path(dir_okay=False), help="the client configuration file")
@click.option("-o", "--output", type=_FORMAT, help="table (the default) or json, for every command")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="seconds for each request")
@click.pass_context
def task(
    ctx: click.Context,
    url: str | None,
    token: str | None,
    user: str | None,
    ca_bundle: str | None,
    config: str | None,
    output: str | None,
    timeout: float,
) -> None:
    """Submit, list, inspect, follow and cancel TES tasks."""
    flags = {"url": url, "token": token, "user": user, "ca_bundle": ca_bundle, "config": config}
    profile = resolve_profile(flags, os.environ)
    client = TesClient(profile, timeout=timeout)
    ctx.call_on_close(client.close)
    ctx.obj = (client, Out(json=output == "json", console=_console(sys.stdout), errors=_console(sys.stderr)))


def _pairs(values: Sequence[str], option: str, sep: str = "=") -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, found, rest = value.partition(sep)
        if not found or not key:
            raise click.BadParameter(f"{value!r} is not KEY{sep}VALUE", param_hint=option)
        pairs.append((key, rest))
    return pairs


def _read_task(source: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise ClientError(f"{source}: {exc.strerror}") from None
    try:
        value = yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise ClientError(f"{source}: neither JSON nor YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(value, dict):
        raise ClientError(f"{source}: a task is a JSON/YAML object")
    return value


@task.command()
@_formatted
@click.argument("file", required=False)
@click.option("--image", help="run COMMAND in this image (instead of a task FILE)")
@click.option("--name")
@click.option("--description")
@click.option("--workdir", help="the executor's working directory")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="an environment variable")
@click.option("--in", "inputs", multiple=True, metavar="PATH=URL", help="an input: stage URL in at PATH")
@click.option("--out", "outputs", multiple=True, metavar="PATH=URL", help="an output: upload PATH to URL")
@click.option("--stdout", help="a file in the container for the executor's stdout")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE")
@click.option("--cpu", type=click.IntRange(min=1), help="CPU cores")
@click.option("--ram-gb", type=click.FloatRange(min=0, min_open=True))
@click.option("--disk-gb", type=click.FloatRange(min=0, min_open=True))
@click.option("--wait", "then_wait", is_flag=True, help="wait for the task to end; exit by its state")
@click.argument("command", nargs=-1)
@click.pass_obj
def submit(
    obj: tuple[TesClient, Out],
    file: str | None,
    image: str | None,
    name: str | None,
    description: str | None,
    workdir: str | None,
    env: tuple[str, ...],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    stdout: str | None,
    tags: tuple[str, ...],
    cpu: int | None,
    ram_gb: float | None,
    disk_gb: float | None,
    then_wait: bool,
    command: tuple[str, ...],
) -> None:
    """Submit a task from FILE (JSON or YAML, - for stdin) or from --image IMAGE -- COMMAND...

    Prints the new task's id.
    """
    client, out = obj
    if image is None:
        if file is None:
            raise click.UsageError("give a task FILE, or --image IMAGE -- COMMAND")
        if command or env or inputs or outputs or workdir or stdout:
            raise click.UsageError("a task FILE takes no COMMAND, --env, --in, --out, --workdir or --stdout")
        body = _read_task(file)
    else:
        command = ((file,) if file is not None else ()) + command
        if not command:
            raise click.UsageError("--image needs a COMMAND after --")
        executor: dict[str, Any] = {"image": image, "command": list(command)}
        if workdir:
            executor["workdir"] = workdir
        if stdout:
            executor["stdout"] = stdout
        if env:
            executor["env"] = dict(_pairs(env, "--env"))
        body = {"executors": [executor]}
        if inputs:
            body["inputs"] = [{"path": p, "url": u} for p, u in _pairs(inputs, "--in")]
        if outputs:
            body["outputs"] = [{"path": p, "url": u} for p, u in _pairs(outputs, "--out")]
        resources = {"cpu_cores": cpu, "ram_gb": ram_gb, "disk_gb": disk_gb}
        if any(v is not None for v in resources.values()):
            body["resources"] = {k: v for k, v in resources.items() if v is not None}
    if name is not None:
        body["name"] = name
    if description is not None:
        body["description"] = description
    if tags:
        body["tags"] = {**(body.get("tags") or {}), **dict(_pairs(tags, "--tag"))}
    task_id = client.create(body)
    if not then_wait:
        if out.json:
            out.data({"id": task_id})
        else:
            click.echo(task_id)
        return
    if not out.json:
        click.echo(task_id)
    _exit(_wait(client, out, [task_id], timeout=None, interval=2.0))


@task.command(name="list")
@_formatted
@click.option("--state", type=click.Choice([str(s) for s in State]), help="only tasks in this state")
@click.option("--name-prefix", help="only tasks whose name starts so")
@click.option("--tag", "tags", multiple=True, metavar="KEY[=VALUE]", help="only tasks with this tag")
@click.option("--owner", help="only this owner's tasks (admins)")
@click.option("--view", type=click.Choice(["MINIMAL", "BASIC", "FULL"]), default="BASIC", show_default=True)
@click.option("--page-size", type=click.IntRange(1, 2048), help="tasks per page (the server's default)")
@click.option("--page-token", help="the page after the one this token came with")
@click.option("--all", "every", is_flag=True, help="follow every page")
@click.pass_obj
def list_(
    obj: tuple[TesClient, Out],
    state: str | None,
    name_prefix: str | None,
    tags: tuple[str, ...],
    owner: str | None,
    view: str,
    page_size: int | None,
    page_token: str | None,
    every: bool,
) -> None:
    """List tasks, newest first. The next page's token goes to stderr."""
    client, out = obj
    params: list[tuple[str, str]] = [("view", view)]
    for key, value in (("state", state), ("name_prefix", name_prefix), ("owner", owner)):
        if value is not None:
            params.append((key, value))
    for tag in tags:
        key, _, value = tag.partition("=")
        if not key:
            raise click.BadParameter(f"{tag!r} has no key", param_hint="--tag")
        params += [("tag_key", key), ("tag_value", value)]
    if page_size is not None:
        params.append(("page_size", str(page_size)))
    tasks: list[dict[str, Any]] = []
    token = page_token
    seen: set[str] = set()
    while True:
        page = client.list([*params, *([("page_token", token)] if token else [])])
        tasks += page.get("tasks", [])
        token = page.get("next_page_token") or None
        if not every or token is None:
            break
        if token in seen:  # a server that hands the same page token out again would never end
            raise ClientError(f"{client.url} repeated a page token: the listing stops here")
        seen.add(token)
    if out.json:
        out.data({"tasks": tasks, **({"next_page_token": token} if token else {})})
        return
    if tasks:
        out.console.print(_task_table(out, tasks))
    else:
        out.errors.print("no tasks")
    if token:
        out.errors.print(f"more: --page-token {token}")


@task.command()
@_formatted
@click.argument("task_id")
@click.option("--view", type=click.Choice(["MINIMAL", "BASIC", "FULL"]), default="FULL", show_default=True)
@click.pass_obj
def get(obj: tuple[TesClient, Out], task_id: str, view: str) -> None:
    """Show one task."""
    client, out = obj
    found = client.get(task_id, view)
    if out.json:
        out.data(found)
    else:
        _show_task(out, found)


@task.command()
@_formatted
@click.argument("task_id")
@click.option("-e", "--executor", type=int, help="this executor only (0 is the first; -1 the last)")
@click.option("--stderr", "stream", flag_value="stderr", help="stderr instead of stdout")
@click.option("--system", "stream", flag_value="system", help="the system logs instead")
@click.pass_obj
def logs(obj: tuple[TesClient, Out], task_id: str, executor: int | None, stream: str | None) -> None:
    """Print the stdout (or stderr) the server kept of a task's executors."""
    client, out = obj
    found = client.get(task_id, "FULL")
    attempt = (found.get("logs") or [{}])[-1]
    if stream == "system":
        lines = attempt.get("system_logs") or []
        if out.json:
            out.data(lines)
        else:
            for line in lines:
                click.echo(_printable(line) if sys.stdout.isatty() else line)
        return
    runs = attempt.get("logs") or []
    chosen = list(enumerate(runs))
    if executor is not None:
        index = executor if executor >= 0 else len(found.get("executors", [])) + executor
        if not 0 <= index < len(found.get("executors", [])):
            raise ClientError(f"task {task_id} has no executor {executor}")
        if index >= len(runs):
            raise ClientError(f"executor {index} of {task_id} has not run (the task is {found['state']})")
        chosen = [(index, runs[index])]
    key = stream or "stdout"
    if out.json:
        out.data([{"executor": i, key: run.get(key, "")} for i, run in chosen])
        return
    for i, run in chosen:
        if len(chosen) > 1:
            click.echo(f"==> executor {i} <==", err=True)
        text = str(run.get(key, ""))
        if sys.stdout.isatty():
            text = _printable(text, keep="\n\t")
        click.echo(text, nl=bool(text) and not text.endswith("\n"))


@task.command()
@_formatted
@click.argument("task_ids", nargs=-1, required=True)
@click.pass_obj
def cancel(obj: tuple[TesClient, Out], task_ids: tuple[str, ...]) -> None:
    """Cancel tasks and print the state each is in then (one that had ended stays as it ended)."""
    client, out = obj
    failed = 0
    states: list[dict[str, str]] = []
    for task_id in task_ids:
        try:
            client.cancel(task_id)
        except ClientError as exc:
            failed += 1
            click.echo(f"poiesis: {exc}", err=True)
            continue
        # A task that had already ended stays as it ended: say which state it is in now.
        state = client.get(task_id, "MINIMAL")["state"]
        states.append({"id": task_id, "state": state})
        if not out.json:
            click.echo(f"{task_id} {_printable(state)}")
    if out.json:
        out.data(states)
    if failed:
        _exit(EXIT_FAILED)


@task.command()
@_formatted
@click.argument("task_ids", nargs=-1, required=True)
@click.option(
    "--timeout", type=click.FloatRange(min=0), help=f"give up after this many seconds (exit {EXIT_TIMEOUT})"
)
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True)
@click.pass_obj
def wait(
    obj: tuple[TesClient, Out], task_ids: tuple[str, ...], timeout: float | None, interval: float
) -> None:
    """Wait until the tasks end, showing their progress; the exit status follows their outcome:
    0 COMPLETE, 10 EXECUTOR_ERROR, 11 SYSTEM_ERROR, 12 CANCELED, 13 PREEMPTED (the first task that
    did not complete decides), 124 timed out."""
    client, out = obj
    _exit(_wait(client, out, list(dict.fromkeys(task_ids)), timeout=timeout, interval=interval))


def _progress(out: Out, tasks: Mapping[str, Mapping[str, Any]], started: float) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("ID", "STATE", "NAME", "EXECUTORS", "ELAPSED"):
        table.add_column(column, no_wrap=column != "NAME")
    for task_id, t in tasks.items():
        runs = ((t.get("logs") or [{}])[-1]).get("logs") or []
        total = len(t.get("executors") or [])
        done = sum(1 for r in runs if r.get("end_time"))
        table.add_row(
            task_id,
            out.state(t.get("state", "?")),
            _plain(t.get("name", "")),
            f"{done}/{total}" if total else "",
            f"{time.monotonic() - started:.0f} s",
        )
    return table


def _wait(client: TesClient, out: Out, task_ids: list[str], *, timeout: float | None, interval: float) -> int:
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    seen: dict[str, dict[str, Any]] = {}
    live = not out.json and out.errors.is_terminal
    last: dict[str, str] = {}

    def poll() -> bool:
        for task_id in task_ids:
            if seen.get(task_id, {}).get("state") in _TERMINAL_NAMES:
                continue
            seen[task_id] = client.get(task_id, "BASIC")
        return all(t.get("state") in _TERMINAL_NAMES for t in seen.values())

    def report() -> None:
        # Without a terminal, each change of state is one line on stderr.
        for task_id, t in seen.items():
            if last.get(task_id) != t["state"]:
                last[task_id] = t["state"]
                click.echo(f"{task_id} {t['state']}", err=True)

    timed_out = False
    with _live(out, live) as display:
        while True:
            finished = poll()
            if display is not None:
                display.update(_progress(out, seen, started))
            elif not out.json:
                report()
            if finished:
                break
            if deadline is not None and time.monotonic() + interval > deadline:
                timed_out = True
                break
            time.sleep(interval)
    states = {task_id: seen[task_id]["state"] for task_id in task_ids}
    if out.json:
        out.data([{"id": task_id, "state": state} for task_id, state in states.items()])
    if timed_out:
        pending = [i for i, s in states.items() if s not in _TERMINAL_NAMES]
        click.echo(f"poiesis: timed out waiting for {', '.join(pending)}", err=True)
        return EXIT_TIMEOUT
    return next((EXIT_BY_STATE.get(s, EXIT_FAILED) for s in states.values() if s != "COMPLETE"), 0)


@contextlib.contextmanager
def _live(out: Out, enabled: bool) -> Iterator[Live | None]:
    if not enabled:
        yield None
        return
    with Live(console=out.errors, refresh_per_second=4, transient=False) as display:
        yield display


def _exit(code: int) -> NoReturn:
    raise SystemExit(code)


def main(argv: list[str]) -> int:
    """`poiesis task ARGS`: the exit status; a ClientError is one line on stderr."""
    try:
        task.main(args=argv, prog_name="poiesis task", standalone_mode=False)
    except ClientError as exc:
        click.echo(f"poiesis: {exc}", err=True)
        return EXIT_FAILED
    except click.exceptions.Abort:
        click.echo("poiesis: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0)
    except KeyboardInterrupt:
        click.echo("poiesis: interrupted", err=True)
        return 130
    return 0
