"""LocalCluster: the embedded backend behind `poiesis serve`.

It runs the same plan the Kubernetes backend renders (stage in, executors in order, stage out) on
this machine, recording every step through the TaskStore as it happens:

- at most `max_tasks` tasks at once, and `max_tasks_per_owner` of one owner; the rest stay QUEUED
  and go on in fair order (`gate`: the owner with the fewest in flight first, oldest first);
- each task gets a workspace directory holding its volume (`<workspaces>/<task id>/volume`);
  executors see it at the task's directories (`domain.staging.mount_dirs`);
- `lifecycle.apply`/`next_step` decide what runs next, so an executor exiting non-zero stops the
  task unless `ignore_error`, and every executor that ran keeps its real exit code;
- stdin/stdout/stderr are files on the task volume (or anywhere in the workspace for paths outside
  it), opened by the server without following links (`beneath`), as are the directories it creates
  for an executor, so nothing an earlier executor left in the volume can steer the server outside
  it; a bounded tail of each stream goes to the executor log;
- the volume belongs to the sandbox's unprivileged user once the inputs are staged;
- each executor runs in its own cgroup where the host allows (`limits`), and the volume is watched
  against `disk_gb` while it runs and counted again as it ends; a limit gone over is named in
  `system_logs` and `termination_reason`;
- cancel stops the running executor's process tree, removes the workspace, then reports CANCELED;
- a task's store writes wait out an unavailable store; a reconciler (at start, every
  `reconcile_seconds` and after a failed write) ends every task nothing here runs: QUEUED ones run,
  CANCELING ones become CANCELED, and INITIALIZING or RUNNING ones whose run was lost become
  SYSTEM_ERROR with a `system_logs` line saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from poiesis.adapters.local import beneath
from poiesis.adapters.local.gate import FairGate
from poiesis.adapters.local.limits import CgroupLimits
from poiesis.adapters.local.sandbox import Launch, Outcome, Runtime
from poiesis.adapters.storage.workspace import LocalWorkspace
from poiesis.domain import lifecycle
from poiesis.domain.fairness import Caps, held_note
from poiesis.domain.staging import mount_dirs
from poiesis.domain.states import State, is_terminal
from poiesis.domain.tes import Task, View
from poiesis.domain.times import rfc3339
from poiesis.ports.clock import Clock
from poiesis.ports.staging import StagingFailed, TaskStager
from poiesis.ports.store import StoreUnavailable, TaskStore

log = logging.getLogger("poiesis.local")

IN_FLIGHT = (State.INITIALIZING, State.RUNNING)
HELD_NOTE_SECONDS = 5.0
"""How long a task waits for a slot before its system_logs say why."""
_LOST = "the local backend lost this task's run (its store failed while it ran); its progress is lost"


class _Patient:
    """The store, with writes and reads that wait out a store that is unavailable for a while
    (SQLite locked by a long writer, PostgreSQL restarting) instead of dropping a task's progress."""

    def __init__(self, store: TaskStore, seconds: float) -> None:
        self._store = store
        self._seconds = seconds

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._store, name)

        async def patient(*args: Any, **kwargs: Any) -> Any:
            deadline = time.monotonic() + self._seconds
            delay = 0.2
            while True:
                try:
                    return await method(*args, **kwargs)
                except StoreUnavailable as exc:
                    if time.monotonic() + delay > deadline:
                        raise
                    log.warning("store unavailable (%s); retrying %s in %.1f s", exc, name, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

        return patient


class LocalCluster:
    name = "local"

    def __init__(
        self,
        *,
        store: TaskStore,
        stager: TaskStager,
        runtime: Runtime,
        clock: Clock,
        workspaces: str,
        max_tasks: int = 4,
        max_tasks_per_owner: int | None = None,
        tail_bytes: int = 64 * 1024,
        keep_workspaces: bool = False,
        limits: CgroupLimits | None = None,
        disk_poll_seconds: float = 2.0,
        reconcile_seconds: float = 15.0,
        store_retry_seconds: float = 120.0,
    ) -> None:
        self._store = store
        self._patient = _Patient(store, store_retry_seconds)
        self._reconcile_seconds = reconcile_seconds
        self._reconciler: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stager = stager
        self.runtime = runtime
        self._clock = clock
        self._workspaces = Path(workspaces)
        self._gate = FairGate(Caps(per_owner=max_tasks_per_owner, total=max(1, max_tasks)))
        self._tail_bytes = tail_bytes
        self._keep = keep_workspaces
        self._running: dict[str, asyncio.Task[None]] = {}
        self.max_tasks = max(1, max_tasks)
        self._holding = 0
        self._notes: set[asyncio.Task[None]] = set()
        self.on_end: Callable[[str], Awaitable[None]] | None = None
        """Called with a task's id once it ran to its end (not when canceled)."""
        self._canceled: set[str] = set()
        self._limits = limits if not runtime.uses_images else None
        self._disk_poll = disk_poll_seconds
        self.enforced = (
            "ram_gb, cpu_cores and disk_gb by the container engine, and a process limit"
            if runtime.uses_images
            else "ram_gb (the sandbox's /tmp included), cpu_cores and a process limit by cgroups; disk_gb"
            if self._limits is not None
            else "disk_gb only; ram_gb as an address-space limit (the sandbox's /tmp not counted); "
            "cpu_cores and the process count NOT enforced (this host gives no writable cgroups)"
        )
        self.network = (
            "tasks share the host's network (local_network = host): they reach this server and "
            "every service of the host"
            if getattr(runtime, "host_network", False)
            else "tasks have no network (local_network = none): a download, a package install or a "
            "storage call from inside a task fails; the filers move inputs and outputs"
        )
        sandbox = (
            ""
            if runtime.uses_images
            else "executors run in a bubblewrap sandbox on the server's own system directories; "
            "the executor images are not used; limits enforced: " + self.enforced + "; "
        )
        self._notice = sandbox + self.network

    def _now(self) -> datetime:
        return self._clock.now()

    # The Cluster port

    async def submit(self, task: Task) -> None:
        if task.id in self._running:
            return
        job = asyncio.create_task(self._run(task), name=f"task-{task.id}")
        self._running[task.id] = job
        job.add_done_callback(lambda _: self._running.pop(task.id, None))

    async def cancel(self, task_id: str) -> bool:
        job = self._running.get(task_id)
        if job is not None:
            self._canceled.add(task_id)
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
            self._canceled.discard(task_id)
        await self._remove_workspace(task_id)
        return True

    # Start and stop

    async def start(self) -> None:
        """Settle what a previous process left behind, run the tasks still QUEUED, and go on
        reconciling."""
        self._workspaces.mkdir(parents=True, exist_ok=True)
        if self.runtime.sandbox_owner is not None:
            self._workspaces.chmod(0o711)  # the sandbox's user passes through, lists nothing
            _check_reachable(self._workspaces)
        await self.reconcile(lost="the server stopped while this task was running; its progress is lost")
        self._reconciler = asyncio.create_task(self._reconcile_forever(), name="local-reconciler")

    async def reconcile(self, lost: str = _LOST) -> None:
        """One level-triggered pass: every non-terminal task in the store that nothing here is
        running is brought to where it belongs. QUEUED ones run; INITIALIZING or RUNNING ones lost
        their run (a store failure ended it, or the server stopped) and become SYSTEM_ERROR;
        CANCELING ones have nothing left and become CANCELED. A second pass changes nothing."""
        for task_id in await self._store.ids_in_states(IN_FLIGHT):
            if task_id in self._running:
                continue
            if await self._store.transition(task_id, State.SYSTEM_ERROR, now=self._now(), reason=lost):
                log.warning("task %s had no run left: SYSTEM_ERROR", task_id)
            await self._remove_workspace(task_id)
        for task_id in await self._store.ids_in_states([State.CANCELING]):
            if task_id in self._running:
                continue
            await self._remove_workspace(task_id)
            await self._store.transition(task_id, State.CANCELED, now=self._now())
        for task_id in sorted(await self._store.ids_in_states([State.QUEUED])):
            if task_id not in self._running:
                await self.submit(await self._store.get(task_id, view=View.FULL))

    async def _reconcile_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._reconcile_seconds)
            self._wake.clear()
            try:
                await self.reconcile()
            except Exception as exc:  # noqa: BLE001 - the next pass retries whatever failed
                log.warning("local backend: a reconcile pass failed, retrying: %s", exc)

    async def stop(self) -> None:
        """Stop every running executor; their tasks end as SYSTEM_ERROR, QUEUED ones wait for the
        next start."""
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
        jobs = dict(self._running)
        for job in jobs.values():
            job.cancel()
        await asyncio.gather(*jobs.values(), return_exceptions=True)
        for task_id in jobs:
            with contextlib.suppress(Exception):
                if await self._store.state(task_id) in IN_FLIGHT:
                    await self._fail(task_id, "the server was stopped while this task was running")
                await self._remove_workspace(task_id)

    # One task

    async def _remove_workspace(self, task_id: str) -> None:
        # Off the event loop: a workspace of many thousands of files takes seconds to remove.
        if not self._keep:
            await asyncio.to_thread(shutil.rmtree, self._workspaces / task_id, ignore_errors=True)

    def load(self) -> tuple[int, int, int]:
        """Tasks running (holding a slot), tasks waiting for one, and the slots."""
        return self._holding, len(self._running) - self._holding, self.max_tasks

    async def _run(self, task: Task) -> None:
        note = asyncio.get_running_loop().call_later(HELD_NOTE_SECONDS, self._note_held, task.id)
        try:
            async with self._gate.slot(task.id, task.owner or ""):
                note.cancel()
                await self._hold_slot(task)
        finally:
            note.cancel()
        if self.on_end is not None:
            try:
                await self.on_end(task.id)
            except Exception:  # a metric is not worth failing a task for
                log.warning("task %s: its state times were not observed", task.id, exc_info=True)

    def _note_held(self, task_id: str) -> None:
        """The task has waited for a slot long enough to say why in its system_logs."""
        noting = asyncio.create_task(self._append_held_note(task_id))
        self._notes.add(noting)
        noting.add_done_callback(self._notes.discard)

    async def _append_held_note(self, task_id: str) -> None:
        try:
            await self._patient.append_system_log(
                task_id, held_note(self._gate.caps, total="local_max_tasks")
            )
        except Exception:  # a note is not worth failing a task for
            log.warning("task %s: why it waits could not be noted", task_id, exc_info=True)

    async def _hold_slot(self, task: Task) -> None:
        self._holding += 1
        try:
            await self._plan(task)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("task %s failed in the local backend", task.id)
            try:
                await self._fail(task.id, f"the local backend failed: {type(exc).__name__}: {exc}")
            except Exception:  # noqa: BLE001 - the store is failing too: the reconciler ends it
                log.warning("task %s: its failure could not be written; the reconciler will end it", task.id)
                self._wake.set()
        finally:
            # A cancel removes the workspace itself once the task has stopped; every other
            # ending (a failed input included) removes it here.
            self._holding -= 1
            if task.id not in self._canceled:
                await asyncio.shield(self._remove_workspace(task.id))

    async def _fail(self, task_id: str, line: str) -> None:
        await self._patient.transition(task_id, State.SYSTEM_ERROR, now=self._now(), reason=line)

    async def _plan(self, task: Task) -> None:
        if not await self._patient.transition(task.id, State.INITIALIZING, now=self._now()):
            return  # canceled while it waited
        if self._notice:
            await self._patient.append_system_log(task.id, self._notice)
        owner = self.runtime.sandbox_owner
        top = self._workspaces / task.id
        root = top / "volume"
        root.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            top.chmod(0o700)
            os.chown(top, *owner)
        workspace = LocalWorkspace(str(root))
        directories = await asyncio.to_thread(mount_dirs, task)
        mounts = {d: workspace.directory(d) for d in directories}
        if task.inputs:
            try:
                await self._stager.stage_in(task, workspace)
            except StagingFailed as exc:
                await self._fail(task.id, str(exc))
                return
        if owner is not None:
            await asyncio.to_thread(beneath.give, str(root), owner)
        executors = task.executors
        has_outputs = bool(task.outputs)
        # A failed executor's outputs (a workflow engine's logs) are still uploaded.
        progress = lifecycle.Progress(state=State.INITIALIZING, deliver_after_failure=True)
        while True:
            if is_terminal(progress.state):
                await self._patient.transition(task.id, progress.state, now=self._now())
                return
            step = lifecycle.next_step(executors, has_outputs, progress)
            match step:
                case lifecycle.RunExecutor(index=index):
                    progress = await self._executor(task, index, workspace, mounts, progress)
                case lifecycle.StageOut(after_failure=after_failure):
                    try:
                        files = await self._stager.stage_out(task, workspace, missing_ok=after_failure)
                    except StagingFailed as exc:
                        if not after_failure:
                            await self._fail(task.id, str(exc))
                            return
                        # The executor's failure is the task's: the upload's is only noted.
                        await self._patient.append_system_log(task.id, f"after the executor error: {exc}")
                        files = []
                    await self._patient.add_output_files(task.id, files)
                    progress = lifecycle.apply(executors, has_outputs, progress, lifecycle.OutputsUploaded())
                case lifecycle.Finish(state=state):
                    await self._patient.transition(task.id, state, now=self._now())
                    return
                case _:
                    return

    async def _executor(
        self,
        task: Task,
        index: int,
        workspace: LocalWorkspace,
        mounts: dict[str, str],
        progress: lifecycle.Progress,
    ) -> lifecycle.Progress:
        started = self._now()
        progress = lifecycle.apply(
            task.executors, bool(task.outputs), progress, lifecycle.ExecutorStarted(index, rfc3339(started))
        )
        await self._patient.transition(task.id, State.RUNNING, now=started)
        await self._patient.record_executor(task.id, index, start_time=started)
        resources = task.resources
        try:
            launch = await asyncio.to_thread(self._prepare, task, index, workspace.root, mounts)
        except OSError as exc:
            # What a shell does with a redirection it cannot open: the executor fails, nothing runs.
            outcome, stopped = Outcome(1, "", f"poiesis: {exc}\n"), None
        else:
            launch.cpu_cores = resources.cpu_cores if resources else None
            launch.ram_bytes = int(resources.ram_gb * 1e9) if resources and resources.ram_gb else None
            outcome, stopped = await self._limited(task, index, launch, workspace.root)
        outcome_code, out, err = outcome.exit_code, outcome.stdout_tail, outcome.stderr_tail
        ended = self._now()
        await self._patient.record_executor(
            task.id, index, end_time=ended, exit_code=outcome_code, stdout=out, stderr=err
        )
        if stopped:
            # It ended within a poll but over the limit: nothing more runs, nothing is uploaded.
            progress = lifecycle.apply(
                task.executors, bool(task.outputs), progress, lifecycle.LimitExceeded(stopped)
            )
        return lifecycle.apply(
            task.executors,
            bool(task.outputs),
            progress,
            lifecycle.ExecutorExited(index, outcome_code, rfc3339(ended)),
        )

    async def _limited(self, task: Task, index: int, launch: Launch, root: str) -> tuple[Outcome, str | None]:
        """Run the executor within its cgroup and the volume's disk_gb; a limit it went over is a
        system_logs line and the task log's termination_reason. The second value: why the task
        stops though the executor ended by itself (over disk_gb when it ended)."""
        cgroup = None
        if self._limits is not None:
            cgroup = await asyncio.to_thread(
                self._limits.create,
                f"{task.id}-{index}",
                ram_bytes=launch.ram_bytes,
                cpu_cores=launch.cpu_cores,
            )
            launch.prefix = cgroup.prefix()
        disk_gb = task.resources.disk_gb if task.resources else None
        run = asyncio.create_task(self.runtime.run(launch, tail_bytes=self._tail_bytes))
        over_disk = False
        try:
            while disk_gb and not run.done():
                await asyncio.wait({run}, timeout=self._disk_poll)
                if not run.done() and await asyncio.to_thread(_usage, root) > disk_gb * 1e9:
                    over_disk = True
                    run.cancel()
            try:
                outcome = await run
            except asyncio.CancelledError:
                if not over_disk:
                    raise
                outcome = Outcome(137, "", "")
            # What it wrote faster than a poll is counted as it ends, before the next executor
            # runs and before outputs are uploaded.
            used = await asyncio.to_thread(_usage, root) if disk_gb and not over_disk else 0
            written_past = bool(disk_gb) and used > (disk_gb or 0) * 1e9
        except asyncio.CancelledError:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run
            raise
        finally:
            breach = cgroup.breach() if cgroup is not None else None
            if cgroup is not None:
                await asyncio.shield(asyncio.to_thread(cgroup.remove))
        reason, line, stopped = None, None, None
        if over_disk:
            reason = "DiskLimitExceeded"
            line = f"executor {index} was stopped: the task volume went over disk_gb = {disk_gb:g}"
        elif written_past:
            reason = "DiskLimitExceeded"
            line = (
                f"executor {index} left the task volume over disk_gb = {disk_gb:g} ({used / 1e9:.3g} GB "
                "when it ended): the task stops here"
            )
            stopped = line
        elif breach is not None and breach.oom_kills:
            reason = "OOMKilled"
            line = (
                f"executor {index} was killed: it went over its memory limit (ram_gb = "
                f"{task.resources.ram_gb if task.resources else None}; the sandbox's /tmp counts)"
            )
        elif breach is not None and breach.process_limit_hits and self._limits is not None:
            line = f"executor {index} reached the process limit ({self._limits.max_processes})"
        if line is not None:
            await self._patient.append_system_log(task.id, line)
        if reason is not None:
            await self._patient.set_metadata(task.id, {"termination_reason": reason})
        return outcome, stopped

    def _prepare(self, task: Task, index: int, root: str, mounts: dict[str, str]) -> Launch:
        """The executor's launch, its directories checked and its redirections opened beneath the
        volume root (an earlier executor may have left links anywhere in it)."""
        executor = task.executors[index]
        owner = self.runtime.sandbox_owner
        for directory in mounts:
            beneath.ensure_directory(root, directory, owner)
        workdir = executor.workdir
        if workdir and any(workdir == d or workdir.startswith(d + "/") for d in mounts):
            beneath.ensure_directory(root, workdir, owner)
        fds: list[int] = []
        try:
            stdin = beneath.open_file(root, executor.stdin, write=False) if executor.stdin else None
            if stdin is not None:
                fds.append(stdin)
            stdout = (
                beneath.open_file(root, executor.stdout, write=True, owner=owner) if executor.stdout else None
            )
            if stdout is not None:
                fds.append(stdout)
            stderr = (
                beneath.open_file(root, executor.stderr, write=True, owner=owner) if executor.stderr else None
            )
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return Launch(
            name=f"poiesis-{task.id}-{index}",
            image=executor.image,
            command=executor.command,
            mounts=mounts,
            env=dict(executor.env or {}),
            workdir=executor.workdir,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
        )


def _usage(root: str) -> int:
    """Bytes the volume holds on disk, counted without following links."""
    total = 0
    for directory, _, files in os.walk(root, followlinks=False):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


def _check_reachable(path: Path) -> None:
    """The sandbox's user must pass through every directory above the workspaces to mount them."""
    for parent in [path, *path.parents]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise RuntimeError(
                f"local_workspaces = {path}: the sandbox's unprivileged user cannot pass through {parent} "
                f"(mode {stat.filemode(parent.stat().st_mode)}); choose a directory under one it can, "
                "such as /var/lib/poiesis/workspaces"
            )
