"""The `poiesis` command: one subcommand per process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, NoReturn

from poiesis import __version__

if TYPE_CHECKING:
    from poiesis.entrypoints.settings import Settings

log = logging.getLogger("poiesis")


def _trec() -> int:
    """The Task Recorder, which starts in every task Pod: it reads its own environment and loads
    none of the server's settings."""
    # Modules httpx and httpcore import when they are installed and get by without: httpx's own
    # command line (rich, click) and trio (httpcore's locks for it). Neither is used here.
    for unused in ("httpx._main", "trio"):
        sys.modules.setdefault(unused, None)  # type: ignore[arg-type]
    from poiesis.entrypoints import trec
    from poiesis.entrypoints.logs import configure

    fmt = os.environ.get("POIESIS_LOG_FORMAT", "json")
    configure(os.environ.get("POIESIS_LOG_LEVEL", "INFO"), "text" if fmt == "text" else "json")
    return asyncio.run(trec.run(trec.config_from_env()))


def _serve_api(settings: Settings, *, workers: int) -> None:
    import uvicorn

    from poiesis.entrypoints.http import JsonErrorsProtocol
    from poiesis.entrypoints.settings import SettingsError, auth_problems

    problems = auth_problems(settings)
    if problems:
        raise SettingsError("; ".join(problems))

    if workers > 1:
        # Each worker process builds its own container from the same environment.
        os.environ.update(
            {
                "POIESIS_DATABASE_URL": settings.database_url,
                "POIESIS_BACKEND": settings.backend or "none",
            }
        )
        uvicorn.run(
            "poiesis.entrypoints.api:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_config=None,
            access_log=False,
            http=JsonErrorsProtocol,
        )
        return
    from poiesis.entrypoints.api import create_app
    from poiesis.entrypoints.container import ApiContainer

    app = create_app(ApiContainer(settings=settings))
    log.info(
        "Poiesis %s serving TES at http://%s:%d/ga4gh/tes/v1 (database %s, backend %s)",
        __version__,
        settings.host,
        settings.port,
        settings.database_url.split("@")[-1],
        settings.backend,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        http=JsonErrorsProtocol,
    )


def _migrate(settings: Settings) -> None:
    from poiesis.adapters.sqlalchemy.engine import (
        create_engine,
        current_revision,
        migrate,
    )

    async def run() -> None:
        engine = create_engine(settings.database_url)
        try:
            await migrate(engine)
            log.info("database at revision %s", await current_revision(engine))
        finally:
            await engine.dispose()

    asyncio.run(run())


def _wait_file(path: str, timeout: float) -> int:
    """Exit 0 once `path` exists, 1 after `timeout` seconds (the Job then fails and the controller
    settles the task from what the Pod shows)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            print(f"poiesis wait-file: {path} did not appear in {timeout:.0f} s", file=sys.stderr)
            return 1
        time.sleep(0.1)
    return 0


def _users(settings: Settings, action: str, name: str | None, password_stdin: bool) -> int:
    """`poiesis users add|remove|list`: edit the users file of basic authentication."""
    from pathlib import Path

    from poiesis.adapters.auth.basic import check_name, hash_password, read_users, write_users
    from poiesis.domain.errors import InvalidRequest

    path = Path(settings.basic_users_file)
    users = read_users(path)
    if action == "list":
        for user in sorted(users):
            print(user)
        return 0
    assert name is not None
    try:
        check_name(name)
    except InvalidRequest as exc:
        print(f"poiesis users: {exc}", file=sys.stderr)
        return 2
    if action == "remove":
        if users.pop(name, None) is None:
            print(f"poiesis users: no user {name!r} in {path}", file=sys.stderr)
            return 1
        write_users(path, users)
        print(f"removed {name} from {path}", file=sys.stderr)
        return 0
    if password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass

        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            print("poiesis users: the passwords differ", file=sys.stderr)
            return 1
    if len(password) < 8:
        print("poiesis users: a password needs at least 8 characters", file=sys.stderr)
        return 2
    existed = name in users
    users[name] = hash_password(password)
    write_users(path, users)
    print(f"{'updated' if existed else 'added'} {name} in {path}", file=sys.stderr)
    return 0


def _exit_now(code: int) -> NoReturn:
    """End a short-lived process without interpreter finalization. The object-store client's
    runtime threads keep running until the process ends and, caught while the interpreter tears
    itself down, can abort it (exit by SIGABRT) after all the work is done and reported."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["task"]:
        from poiesis.entrypoints.client import main as client_main

        return client_main(args_in[1:])
    parser = argparse.ArgumentParser(prog="poiesis", description="GA4GH TES v1.1.0 for Kubernetes")
    parser.add_argument("--version", action="version", version=f"poiesis {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="embedded mode: API and SQLite in one process")
    api = sub.add_parser("api", help="the TES REST API")
    for p in (serve, api):
        p.add_argument("--host")
        p.add_argument("--port", type=int)
        p.add_argument("--database-url")
    api.add_argument("--workers", type=int)
    migrate = sub.add_parser("migrate", help="apply the database migrations and exit")
    migrate.add_argument("--database-url")
    filer = sub.add_parser("filer", help="stage a task's inputs or outputs (the tif/tof containers)")
    filer.add_argument("direction", choices=["stage-in", "stage-out"])
    filer.add_argument("--task", required=True, help="the task as JSON")
    filer.add_argument("--root", required=True, help="the task volume")
    filer.add_argument("--report", help="write the result as JSON here")
    filer.add_argument("--termination-log", help="write a failure's message here")
    filer.add_argument(
        "--after-failure-mark",
        help="stage-out: if this file exists (an executor failed), upload the outputs that exist",
    )
    sub.add_parser(
        "task", help="a client: submit, list, get, logs, cancel and wait for tasks", add_help=False
    )
    sub.add_parser("trec", help="the Task Recorder (the sidecar of each task Pod)")
    sub.add_parser("tctl", help="the Task Controller (leader-elected; heals what trec cannot record)")
    users = sub.add_parser("users", help="add, remove or list the users of basic authentication")
    users.add_argument("action", choices=["add", "remove", "list"])
    users.add_argument("name", nargs="?")
    users.add_argument("--file", help="the users file (default: the basic_users_file setting)")
    users.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    wait_file = sub.add_parser("wait-file", help="wait until a file exists (the task Pod's main container)")
    wait_file.add_argument("path")
    wait_file.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(args_in)
    if args.command == "wait-file":
        return _wait_file(args.path, args.timeout)
    if args.command == "trec":
        return _trec()

    # The server's settings (and what they import) only for the server's commands.
    import msgspec

    from poiesis.entrypoints.logs import configure
    from poiesis.entrypoints.settings import SettingsError, load

    try:
        settings = load(
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            database_url=getattr(args, "database_url", None),
            workers=getattr(args, "workers", None),
        )
    except SettingsError as exc:
        print(f"poiesis: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_format)

    if args.command == "users":
        if args.action != "list" and not args.name:
            parser.error(f"users {args.action} needs a NAME")
        if args.file:
            settings = msgspec.structs.replace(settings, basic_users_file=args.file)
        return _users(settings, args.action, args.name, args.password_stdin)
    if args.command == "tctl":
        from poiesis.entrypoints import tctl

        return asyncio.run(tctl.run(settings))
    if args.command == "filer":
        from poiesis.entrypoints import filer as filer_process

        code = filer_process.main(
            settings,
            args.direction,
            args.task,
            args.root,
            args.report,
            args.termination_log,
            after_failure_mark=args.after_failure_mark,
        )
        _exit_now(code)
    if args.command == "migrate":
        _migrate(settings)
        return 0
    try:
        if args.command == "serve":
            _serve_api(msgspec.structs.replace(settings, backend=settings.backend or "local"), workers=1)
        else:
            settings = msgspec.structs.replace(settings, backend=settings.backend or "none")
            if settings.backend == "local" and settings.workers > 1:
                print("poiesis: the local backend runs in one process; use workers = 1", file=sys.stderr)
                return 2
            _serve_api(settings, workers=settings.workers)
    except SettingsError as exc:
        print(f"poiesis: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
