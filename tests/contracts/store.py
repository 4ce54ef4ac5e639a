"""The TaskStore contract: the tests every adapter passes. Not collected here: a module that
provides a `store` fixture imports them (tests/integration/test_store_contract.py for SQLite and
PostgreSQL, tests/unit/test_fake_store.py for the in-memory FakeTaskStore)."""

from __future__ import annotations

import asyncio
import itertools
import random

import msgspec
import pytest

from poiesis.domain.errors import Conflict, KeyReused, TaskNotFound
from poiesis.domain.idempotency import Key
from poiesis.domain.identity import new_task_id
from poiesis.domain.listing import TaskQuery
from poiesis.domain.states import TERMINAL, State, can_transition
from poiesis.domain.submission import NewInput, NewOutput
from poiesis.domain.tes import FileType, OutputFileLog, Resources, Task, View
from poiesis.domain.times import parse_time
from poiesis.domain.views import encoded
from poiesis.ports.store import Applied, ExecutorRan, Moved, OpenTask, OutputsRecorded, TaskStore
from tests.builders import make_executor, make_task
from tests.conftest import FakeClock

NOW = parse_time("2026-01-02T03:04:05Z")


async def test_full_task_round_trips(store: TaskStore, clock: FakeClock) -> None:
    task = make_task(
        clock,
        executors=2,
        name="align",
        description="bwa mem",
        inputs=[NewInput(path="/in/ref.fa", url="s3://b/ref.fa"), NewInput(path="/in/x", content="inline")],
        outputs=[NewOutput(path="/out/*.bam", path_prefix="/out/", url="s3://b/run/", type=FileType.FILE)],
        resources=Resources(
            cpu_cores=2,
            ram_gb=3.5,
            disk_gb=10.0,
            preemptible=True,
            zones=["z1"],
            backend_parameters={"Queue": "a"},
        ),
        volumes=["/scratch"],
        tags={"project": "p1", "empty": ""},
    )
    await store.create(task, owner="alice", system_logs=["a warning"])
    got = await store.get(task.id)
    assert got.executors == task.executors
    assert got.inputs == task.inputs
    assert got.outputs == task.outputs
    assert got.resources == task.resources
    assert (got.name, got.description, got.volumes, got.tags) == ("align", "bwa mem", ["/scratch"], task.tags)
    assert got.logs is not None
    assert got.logs[0].system_logs == ["a warning"]
    basic = await store.get(task.id, view=View.BASIC)
    assert basic.inputs is not None
    assert basic.inputs[1].content is None
    assert basic.logs is not None
    assert basic.logs[0].system_logs is None


async def test_creation_time_is_kept_to_the_microsecond(store: TaskStore, clock: FakeClock) -> None:
    task = make_task(clock)
    await store.create(task, owner="a", system_logs=[])
    got = await store.get(task.id)
    assert got.creation_time.endswith("Z")
    from datetime import datetime

    assert datetime.fromisoformat(got.creation_time) == datetime.fromisoformat(task.creation_time)


async def test_unknown_and_foreign_tasks_are_not_found(store: TaskStore, clock: FakeClock) -> None:
    task = make_task(clock)
    await store.create(task, owner="alice", system_logs=[])
    with pytest.raises(TaskNotFound):
        await store.get("01arz3ndektsv4rrffq69g5fav")
    with pytest.raises(TaskNotFound):
        await store.get(task.id, owner="bob")
    with pytest.raises(TaskNotFound):
        await store.state(task.id, owner="bob")
    with pytest.raises(TaskNotFound):
        await store.transition("01arz3ndektsv4rrffq69g5fav", State.RUNNING, now=NOW)
    assert await store.state(task.id, owner="alice") is State.QUEUED


async def test_creating_an_id_twice_conflicts_and_keeps_the_first(store: TaskStore, clock: FakeClock) -> None:
    task = make_task(clock, name="first")
    await store.create(task, owner="a", system_logs=[])
    with pytest.raises(Conflict):
        await store.create(task, owner="b", system_logs=[])
    assert (await store.get(task.id)).name == "first"


async def test_a_create_retried_with_its_idempotency_key_makes_one_task(
    store: TaskStore, clock: FakeClock
) -> None:
    first, retry = make_task(clock, name="first"), make_task(clock, name="first")
    key = Key("retry-1", "f" * 64)
    assert await store.create_once(first, owner="a", system_logs=["note"], key=key) == first.id
    assert await store.create_once(retry, owner="a", system_logs=["note"], key=key) == first.id
    with pytest.raises(TaskNotFound):
        await store.get(retry.id)
    # Another body under the key is refused, naming the task the key made; nothing is stored.
    other = make_task(clock, name="other")
    with pytest.raises(KeyReused) as caught:
        await store.create_once(other, owner="a", system_logs=[], key=Key("retry-1", "0" * 64))
    assert caught.value.task_id == first.id
    with pytest.raises(TaskNotFound):
        await store.get(other.id)
    # A key is its owner's: another owner's same key makes their own task.
    theirs = make_task(clock, name="theirs")
    assert await store.create_once(theirs, owner="b", system_logs=[], key=key) == theirs.id
    assert (await store.get(first.id)).logs[0].system_logs == ["note"]  # type: ignore[index]


async def test_concurrent_creates_with_one_key_make_one_task(store: TaskStore, clock: FakeClock) -> None:
    tasks = [make_task(clock, name=f"t{i}") for i in range(8)]
    key = Key("burst", "a" * 64)
    ids = await asyncio.gather(*(store.create_once(t, owner="a", system_logs=[], key=key) for t in tasks))
    assert len(set(ids)) == 1
    (made,) = [t for t in tasks if t.id == ids[0]]
    stored = [t.id for t in (await store.list_tasks(TaskQuery(owner="a", page_size=100))).tasks]
    assert stored == [made.id]


async def test_creates_arriving_together_are_each_stored_and_a_taken_id_conflicts_alone(
    store: TaskStore, clock: FakeClock
) -> None:
    """Stores may commit concurrent creates together (group commit): a create whose id is taken
    is refused on its own, the others of its group are stored."""
    taken = make_task(clock, name="first")
    await store.create(taken, owner="a", system_logs=[])
    tasks = [make_task(clock, name=f"t{i}") for i in range(40)]
    again = msgspec.structs.replace(taken, name="second")
    batch = [*tasks[:20], again, *tasks[20:]]
    results = await asyncio.gather(
        *(store.create(t, owner="a", system_logs=[]) for t in batch), return_exceptions=True
    )
    assert [type(r) for r in results] == [type(None)] * 20 + [Conflict] + [type(None)] * 20
    assert taken.id in str(results[20])
    assert (await store.get(taken.id)).name == "first"
    for task in tasks:
        assert (await store.get(task.id)).name == task.name


async def test_tasks_created_together_read_back_as_one_created_alone(
    store: TaskStore, clock: FakeClock
) -> None:
    """A store may commit concurrent creates together (group commit), in another statement than a
    lone create: every field of every task, and its rendered documents, come back the same either way
    (each task's twin, with another id, is created alone)."""
    rng = random.Random(7)
    executors = [
        [make_executor(0)],
        [
            make_executor(
                0, workdir="/w", stdin="/in/a", stdout="/out/o", stderr="/out/e", env={"A": "1", "B": ""}
            ),
            make_executor(1, command=["sh", "-c", "echo 'q' \"d\" \\ ☃"], ignore_error=True),
        ],
    ]
    inputs = [
        None,
        [NewInput(path="/in/a", url="s3://b/a", name="a", description="the a", streamable=True)],
        [
            NewInput(path="/in/x", content="inline ☃\n"),
            NewInput(path="/in/d", url="s3://b/d/", type=FileType.DIRECTORY),
        ],
    ]
    outputs = [
        None,
        [NewOutput(path="/out/*.bam", path_prefix="/out/", url="s3://b/run/", name="bams", description="d")],
        [
            NewOutput(path="/out/o", url="s3://b/o"),
            NewOutput(path="/out/d", url="s3://b/d/", type=FileType.DIRECTORY),
        ],
    ]
    resources = [
        None,
        Resources(cpu_cores=2, ram_gb=3.5),
        Resources(disk_gb=1.25, preemptible=False, zones=["z1", "z2"], backend_parameters={"Queue": "a"}),
    ]

    def varied(i: int) -> Task:
        task = make_task(
            clock,
            name=rng.choice([None, f"t{i}", "ünï ☃"]),
            description=rng.choice([None, "", "a\nb 'q' \"d\" \\"]),
            inputs=rng.choice(inputs),
            outputs=rng.choice(outputs),
            resources=rng.choice(resources),
            volumes=rng.choice([None, ["/scratch"], ["/v1", "/v2"]]),
            tags=rng.choice([None, {}, {"project": "p1", "empty": ""}, {"k'ey": 'v"al', "ü": "☃"}]),
        )
        return msgspec.structs.replace(task, executors=rng.choice(executors))

    tasks = [varied(i) for i in range(48)]
    twins = []
    for task in tasks:
        clock.advance(0.001)
        twins.append(msgspec.structs.replace(task, id=new_task_id(clock.now())))
    for twin in twins:
        await store.create(twin, owner="a", system_logs=[])
    await asyncio.gather(*(store.create(t, owner="a", system_logs=[]) for t in tasks))
    for task, twin in zip(tasks, twins, strict=True):
        got, alone = await store.get(task.id), await store.get(twin.id)
        assert msgspec.structs.replace(alone, id=task.id) == got
        assert (got.name, got.description, got.volumes, got.inputs, got.outputs) == (
            task.name,
            task.description,
            task.volumes,
            task.inputs,
            task.outputs,
        )
        assert (got.executors, got.resources, got.tags or {}) == (
            task.executors,
            task.resources,
            task.tags or {},
        )
        for view in (View.BASIC, View.FULL):
            kept = await store.document(twin.id, view=view)
            assert await store.document(task.id, view=view) == kept.replace(
                twin.id.encode(), task.id.encode()
            )


async def test_tag_filters_take_quotes_backslashes_and_wildcards_as_plain_characters(
    store: TaskStore, clock: FakeClock
) -> None:
    """Tag keys and values go to the database as values, never as SQL, JSON or patterns."""
    odd = make_task(clock, tags={"q\"uo\\te'": "v'a\"l\\ue", "%_*": "", "ünï": "x%"})
    plain = make_task(clock, tags={"q": "v", "%": "x", "ünï": "xy"})
    for task in (odd, plain):
        await store.create(task, owner="a", system_logs=[])
    cases = [
        ({"q\"uo\\te'": "v'a\"l\\ue"}, [odd.id]),
        ({"q\"uo\\te'": ""}, [odd.id]),
        ({"%_*": ""}, [odd.id]),
        ({"ünï": "x%"}, [odd.id]),
        ({"ünï": "x_"}, []),
        ({"%": ""}, [plain.id]),
        ({"%": "%"}, []),
        ({'"': ""}, []),
    ]
    for tags, expected in cases:
        page = await store.list_tasks(TaskQuery(tags=tags))
        assert [t.id for t in page.tasks] == expected, tags
        documents = await store.documents(TaskQuery(tags=tags, view=View.BASIC))
        assert [msgspec.json.decode(d)["id"] for d in documents.documents] == expected, tags


async def test_transitions_are_guarded_and_recorded(store: TaskStore, clock: FakeClock) -> None:
    task = make_task(clock)
    await store.create(task, owner="a", system_logs=[])
    assert await store.transition(task.id, State.RUNNING, now=parse_time("2026-01-02T03:04:06Z"))
    assert not await store.transition(task.id, State.RUNNING, now=NOW), "already there"
    assert not await store.transition(task.id, State.INITIALIZING, now=NOW), "never backwards"
    assert await store.transition(task.id, State.COMPLETE, now=parse_time("2026-01-02T03:04:09Z"))
    assert not await store.transition(task.id, State.SYSTEM_ERROR, now=NOW), "terminal is absorbing"
    assert [(h.source, h.target) for h in await store.history(task.id)] == [
        (State.QUEUED, State.RUNNING),
        (State.RUNNING, State.COMPLETE),
    ]
    log = (await store.get(task.id)).logs[0]  # type: ignore[index]
    assert log.start_time == "2026-01-02T03:04:06.000000Z"
    assert log.end_time == "2026-01-02T03:04:09.000000Z"


async def test_a_reason_is_written_with_its_transition_and_only_then(
    store: TaskStore, clock: FakeClock
) -> None:
    task = make_task(clock)
    await store.create(task, owner="a", system_logs=[])
    assert await store.transition(task.id, State.SYSTEM_ERROR, now=NOW, reason="input 0: not found")
    assert not await store.transition(task.id, State.SYSTEM_ERROR, now=NOW, reason="again")
    assert not await store.transition(task.id, State.EXECUTOR_ERROR, now=NOW, reason="late")
    assert (await store.get(task.id)).logs[0].system_logs == ["input 0: not found"]  # type: ignore[index]


async def test_a_terminal_state_comes_with_its_reason_and_metadata_or_not_at_all(
    store: TaskStore, clock: FakeClock
) -> None:
    task = make_task(clock)
    await store.create(task, owner="a", system_logs=[])
    await store.set_metadata(task.id, {"node": "n1"})
    evicted = {"termination_reason": "Evicted"}
    assert await store.transition(task.id, State.PREEMPTED, now=NOW, reason="evicted", metadata=evicted)
    oom = {"termination_reason": "OOMKilled"}
    assert not await store.transition(task.id, State.SYSTEM_ERROR, now=NOW, reason="late", metadata=oom)
    log = (await store.get(task.id)).logs[0]  # type: ignore[index]
    assert (log.system_logs, log.metadata) == (["evicted"], {"node": "n1", "termination_reason": "Evicted"})


async def test_executor_logs_upsert_and_hide_until_the_exit_code_is_known(
    store: TaskStore, clock: FakeClock
) -> None:
    task = make_task(clock, executors=2)
    await store.create(task, owner="a", system_logs=[])
    await store.record_executor(task.id, 0, start_time=NOW)
    assert (await store.get(task.id)).logs[0].logs == []  # type: ignore[index]
    await store.record_executor(task.id, 0, end_time=NOW, exit_code=3, stdout="out", stderr="err")
    await store.record_executor(task.id, 0, end_time=NOW, exit_code=3)  # a restarted writer repeats itself
    await store.record_executor(task.id, 1, start_time=NOW)
    logs = (await store.get(task.id)).logs[0].logs  # type: ignore[index]
    assert [(e.exit_code, e.stdout, e.stderr, e.start_time is not None) for e in logs] == [
        (3, "out", "err", True)
    ]
    basic = (await store.get(task.id, view=View.BASIC)).logs[0].logs  # type: ignore[index]
    assert (basic[0].exit_code, basic[0].stdout) == (3, None)


async def test_outputs_metadata_and_system_logs(store: TaskStore, clock: FakeClock) -> None:
    task = make_task(clock)
    await store.create(task, owner="a", system_logs=[])
    await store.add_output_files(
        task.id, [OutputFileLog(url="s3://b/a", path="/out/a", size_bytes=str(5 * 2**40))]
    )
    await store.add_output_files(  # a restarted writer repeats itself: nothing is added twice
        task.id, [OutputFileLog(url="s3://b/a", path="/out/a", size_bytes=str(5 * 2**40))]
    )
    await store.set_metadata(task.id, {"node": "n1"})
    await store.set_metadata(task.id, {"termination_reason": "OOMKilled"})
    await store.append_system_log(task.id, "first")
    await store.append_system_log(task.id, "second")
    log = (await store.get(task.id)).logs[0]  # type: ignore[index]
    assert log.outputs == [OutputFileLog(url="s3://b/a", path="/out/a", size_bytes=str(5 * 2**40))]
    assert log.metadata == {"node": "n1", "termination_reason": "OOMKilled"}
    assert log.system_logs == ["first", "second"]


async def _seed(store: TaskStore, clock: FakeClock) -> dict[str, str]:
    specs = [
        ("align-1", {"project": "p1", "stage": "x"}),
        ("align-2", {"project": "p2"}),
        ("Align-3", {"project": "p1"}),
        ("call_%", {"flag": ""}),
        ("callx", {"flag": "on"}),
        ("c/a", {}),
        (None, {}),
    ]
    ids = {}
    for name, tags in specs:
        task = make_task(clock, name=name, tags=tags or None)
        await store.create(task, owner="alice" if name != "callx" else "bob", system_logs=[])
        ids[name or "unnamed"] = task.id
    await store.transition(ids["align-2"], State.RUNNING, now=NOW)
    return ids


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(
            TaskQuery(),
            ["unnamed", "c/a", "callx", "call_%", "Align-3", "align-2", "align-1"],
            id="all newest first",
        ),
        pytest.param(TaskQuery(name_prefix="align"), ["align-2", "align-1"], id="prefix is case-sensitive"),
        pytest.param(TaskQuery(name_prefix="call_"), ["call_%"], id="LIKE wildcards are literal"),
        pytest.param(TaskQuery(name_prefix="c%"), [], id="a percent sign is literal"),
        pytest.param(TaskQuery(name_prefix="c/"), ["c/a"], id="the escape character is literal"),
        pytest.param(TaskQuery(state=State.RUNNING), ["align-2"], id="state"),
        pytest.param(TaskQuery(tags={"project": "p1"}), ["Align-3", "align-1"], id="tag value"),
        pytest.param(
            TaskQuery(tags={"project": ""}), ["Align-3", "align-2", "align-1"], id="tag key any value"
        ),
        pytest.param(TaskQuery(tags={"flag": ""}), ["callx", "call_%"], id="empty value matches any"),
        pytest.param(TaskQuery(tags={"project": "p1", "stage": "x"}), ["align-1"], id="tags are ANDed"),
        pytest.param(
            TaskQuery(tags={"project": "p1"}, name_prefix="align"), ["align-1"], id="filters are ANDed"
        ),
        pytest.param(TaskQuery(owner="bob"), ["callx"], id="owner"),
        pytest.param(TaskQuery(tags={"nope": ""}), [], id="missing key"),
    ],
)
async def test_list_filters(
    store: TaskStore, clock: FakeClock, query: TaskQuery, expected: list[str]
) -> None:
    ids = await _seed(store, clock)
    names = {v: k for k, v in ids.items()}
    page = await store.list_tasks(query)
    assert [names[t.id] for t in page.tasks] == expected
    assert page.next_after is None


async def test_long_names_and_tag_keys_are_stored_and_filtered_on_whole(
    store: TaskStore, clock: FakeClock
) -> None:
    """A name or a tag key may be far longer than an index entry holds (2,704 bytes on PostgreSQL,
    which indexes their first 256 characters): it is stored, and a filter longer than that part
    tells apart values that share it, wildcards and four-byte characters at the cut included."""
    four = "\U0001d538"  # a character of four bytes in UTF-8
    shared = (f"ü{four}/%_" * 60)[:255] + "%"  # 256 characters, a wildcard the last
    rest = "".join(random.Random(7).choice("abc" + four) for _ in range(19_000))
    names = {"x": shared + "x" + rest, "y": shared + "y" + rest}
    ids = {}
    for label, name in names.items():
        task = make_task(clock, name=name, tags={shared + label + rest: "", "k": label})
        await store.create(task, owner="alice", system_logs=[])
        ids[label] = task.id
        assert (await store.get(task.id)).name == name
    cases = [
        (TaskQuery(name_prefix=shared), ["y", "x"]),
        (TaskQuery(name_prefix=shared[:-1] + "_"), []),
        (TaskQuery(name_prefix=shared + "x"), ["x"]),
        (TaskQuery(name_prefix=names["y"][:1024]), ["y"]),
        (TaskQuery(name_prefix=names["y"][:1024], state=State.QUEUED, owner="alice"), ["y"]),
        (TaskQuery(name_prefix=names["y"][:1024], owner="bob"), []),
        (TaskQuery(tags={shared + "x" + rest: ""}), ["x"]),
        (TaskQuery(tags={shared + "y" + rest: "", "k": "y"}), ["y"]),
        (TaskQuery(tags={shared + "y" + rest: "", "k": "x"}), []),
        (TaskQuery(tags={shared + "z" + rest: ""}), []),
    ]
    for query, expected in cases:
        page = await store.list_tasks(query)
        assert [t.id for t in page.tasks] == [ids[e] for e in expected], query
        documents = await store.documents(msgspec.structs.replace(query, view=View.BASIC))
        assert [msgspec.json.decode(d)["id"] for d in documents.documents] == [ids[e] for e in expected]


async def test_pages_stay_correct_while_tasks_are_inserted(store: TaskStore, clock: FakeClock) -> None:
    existing = []
    for _ in range(25):
        task = make_task(clock, tags={"batch": "1"})
        await store.create(task, owner="a", system_logs=[])
        existing.append(task.id)
    seen: list[str] = []
    after = None
    while True:
        page = await store.list_tasks(
            TaskQuery(page_size=7, after=after, tags={"batch": "1"}, view=View.BASIC)
        )
        seen.extend(t.id for t in page.tasks)
        # New tasks arrive between pages; they are newer, so they never shift the pages still to come.
        newcomer = make_task(clock, tags={"batch": "1"})
        await store.create(newcomer, owner="a", system_logs=[])
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == sorted(existing, reverse=True)


async def test_concurrent_writers_always_leave_a_legal_history(store: TaskStore, clock: FakeClock) -> None:
    rng = random.Random(7)
    targets = [s for s in State if s is not State.UNKNOWN]
    for _ in range(3):
        task = make_task(clock, executors=3)
        await store.create(task, owner="a", system_logs=[])

        async def writer(n: int, task_id: str = task.id) -> None:
            for target in rng.sample(targets, k=len(targets)):
                await store.transition(task_id, target, now=NOW)
                await store.record_executor(task_id, n % 3, start_time=NOW, exit_code=n)

        await asyncio.gather(*(writer(n) for n in range(12)))
        history = await store.history(task.id)
        assert history[0].source is State.QUEUED
        for before, after in itertools.pairwise(history):
            assert before.target is after.source, "every move starts where the last one ended"
        for move in history:
            assert can_transition(move.source, move.target)
        final = await store.state(task.id)
        assert final is history[-1].target
        assert final in TERMINAL
        assert len((await store.get(task.id)).logs[0].logs) == 3  # type: ignore[index]


async def test_ids_in_states(store: TaskStore, clock: FakeClock) -> None:
    a, b = make_task(clock), make_task(clock)
    for t in (a, b):
        await store.create(t, owner="x", system_logs=[])
    await store.transition(b.id, State.RUNNING, now=NOW)
    assert await store.ids_in_states([State.RUNNING, State.INITIALIZING]) == [b.id]
    assert await store.ids_in_states([State.QUEUED, State.RUNNING]) == [a.id, b.id]


async def test_open_tasks_name_their_owner_and_state_oldest_first(store: TaskStore, clock: FakeClock) -> None:
    a, b, c = make_task(clock), make_task(clock), make_task(clock)
    for task, owner in ((a, "ann"), (b, "bob"), (c, "ann")):
        await store.create(task, owner=owner, system_logs=[])
    await store.transition(b.id, State.INITIALIZING, now=NOW)
    await store.transition(c.id, State.CANCELING, now=NOW)
    await store.transition(c.id, State.CANCELED, now=NOW)
    assert await store.open_tasks() == [
        OpenTask(a.id, "ann", State.QUEUED),
        OpenTask(b.id, "bob", State.INITIALIZING),
    ]


@pytest.mark.parametrize("view", [View.BASIC, View.FULL])
async def test_each_listed_task_carries_only_its_own_children(
    store: TaskStore, clock: FakeClock, view: View
) -> None:
    created = []
    for i in range(4):
        task = make_task(
            clock,
            executors=i + 1,
            inputs=[NewInput(path=f"/in/{i}", content=f"c{i}")],
            outputs=[NewOutput(path=f"/out/{i}", url=f"s3://b/{i}")],
        )
        await store.create(task, owner="a", system_logs=[f"line {i}"])
        await store.record_executor(task.id, 0, start_time=NOW, exit_code=i)
        files = [OutputFileLog(url=f"s3://b/{i}", path=f"/out/{i}", size_bytes=str(i))]
        await store.add_output_files(task.id, files)
        created.append(task)
    page = await store.list_tasks(TaskQuery(view=view))
    for task, listed in zip(reversed(created), page.tasks, strict=True):
        i = len(task.executors) - 1
        assert listed.id == task.id
        assert listed.executors == task.executors
        assert [x.path for x in listed.inputs or []] == [f"/in/{i}"]
        assert [x.url for x in listed.outputs or []] == [f"s3://b/{i}"]
        log = (listed.logs or [])[0]
        assert [e.exit_code for e in log.logs] == [i]
        assert [f.size_bytes for f in log.outputs] == [str(i)]
        assert log.system_logs == ([f"line {i}"] if view is View.FULL else None)


async def test_counts_of_one_owner(store: TaskStore, clock: FakeClock) -> None:
    ids = {}
    for owner in ("a", "a", "a", "b"):
        task = make_task(clock)
        await store.create(task, owner=owner, system_logs=[])
        ids.setdefault(owner, []).append(task.id)
    await store.transition(ids["a"][0], State.RUNNING, now=NOW)
    await store.transition(ids["b"][0], State.INITIALIZING, now=NOW)
    assert await store.count_by_state(owner="a") == {State.QUEUED: 2, State.RUNNING: 1}
    assert await store.count_by_state(owner="b") == {State.INITIALIZING: 1}
    assert await store.count_by_state(owner="nobody") == {}


async def test_apply_makes_its_changes_in_order_and_skips_moves_the_state_has_gone_past(
    store: TaskStore, clock: FakeClock
) -> None:
    task = make_task(clock, executors=2, outputs=[NewOutput(path="/out/x", url="s3://b/x")])
    await store.create(task, owner="a", system_logs=[])
    later = parse_time("2026-01-02T03:04:09Z")
    applied = await store.apply(
        task.id,
        [
            Moved(target=State.INITIALIZING, at=NOW),
            Moved(target=State.RUNNING, at=NOW),
            ExecutorRan(index=0, start_time=NOW),
            ExecutorRan(index=0, end_time=later, exit_code=0, stdout="out", stderr="err"),
            Moved(target=State.INITIALIZING, at=later),  # gone past: skipped
            ExecutorRan(index=1, start_time=later),
        ],
    )
    assert applied == Applied(state=State.RUNNING, moved=(State.INITIALIZING, State.RUNNING))
    files = [OutputFileLog(url="s3://b/x", path="/out/x", size_bytes="3")]
    done = await store.apply(
        task.id,
        [
            ExecutorRan(index=1, end_time=later, exit_code=0),
            OutputsRecorded(files=files),
            Moved(target=State.COMPLETE, at=later),
            Moved(target=State.SYSTEM_ERROR, at=later, reason="too late"),
        ],
    )
    assert done == Applied(state=State.COMPLETE, moved=(State.COMPLETE,))
    got = await store.get(task.id)
    log = (got.logs or [])[0]
    assert [(e.exit_code, e.stdout) for e in log.logs] == [(0, "out"), (0, None)]
    assert log.outputs == files
    assert log.system_logs is None, "the skipped move wrote nothing"
    assert [(m.source, m.target) for m in await store.history(task.id)] == [
        (State.QUEUED, State.INITIALIZING),
        (State.INITIALIZING, State.RUNNING),
        (State.RUNNING, State.COMPLETE),
    ]
    assert await store.apply(task.id, []) == Applied(state=State.COMPLETE)
    with pytest.raises(TaskNotFound):
        await store.apply("01arz3ndektsv4rrffq69g5fav", [Moved(target=State.RUNNING, at=NOW)])


def _decoded(document: bytes) -> object:
    return msgspec.json.decode(document)


async def _rich_task(store: TaskStore, clock: FakeClock) -> str:
    """A task with something in every field a view shows or hides, part-way through its run."""
    task = make_task(
        clock,
        executors=3,
        name="rich",
        description="every field",
        inputs=[NewInput(path="/in/a", url="s3://b/a"), NewInput(path="/in/b", content='inline "text"\n')],
        outputs=[NewOutput(path="/out/d", path_prefix="/out/", url="s3://b/d/", type=FileType.DIRECTORY)],
        resources=Resources(
            cpu_cores=2, ram_gb=0.1, disk_gb=10.0, zones=["z1"], backend_parameters={"q": "a"}
        ),
        volumes=["/scratch"],
        tags={"project": "p1", "empty": "", "ünï": "cödé"},
    )
    await store.create(task, owner="alice", system_logs=["a warning"])
    await store.apply(
        task.id,
        [
            Moved(target=State.INITIALIZING, at=NOW),
            Moved(target=State.RUNNING, at=NOW),
            ExecutorRan(index=0, start_time=NOW, end_time=NOW, exit_code=0, stdout="out\u2028", stderr="err"),
            ExecutorRan(index=1, start_time=NOW),  # running: no exit code yet
            OutputsRecorded(
                files=[OutputFileLog(url="s3://b/d/x", path="/out/d/x", size_bytes="12345678901")]
            ),
        ],
    )
    await store.set_metadata(task.id, {"node": "n1"})
    return task.id


@pytest.mark.parametrize("view", list(View))
async def test_a_document_is_the_rendered_task(store: TaskStore, clock: FakeClock, view: View) -> None:
    rich = await _rich_task(store, clock)
    bare = make_task(clock)
    await store.create(bare, owner="bob", system_logs=[])
    for task_id, owner in ((rich, "alice"), (bare.id, "bob")):
        expected = encoded(await store.get(task_id, view=view), view)
        assert _decoded(await store.document(task_id, view=view)) == _decoded(expected)
        assert await store.document(task_id, view=view, owner=owner) == await store.document(
            task_id, view=view
        )
        with pytest.raises(TaskNotFound):
            await store.document(task_id, view=view, owner="mallory")
    with pytest.raises(TaskNotFound):
        await store.document("01arz3ndektsv4rrffq69g5fav", view=view)


@pytest.mark.parametrize("view", list(View))
async def test_a_page_of_documents_is_the_rendered_page(
    store: TaskStore, clock: FakeClock, view: View
) -> None:
    await _rich_task(store, clock)
    await _seed(store, clock)
    queries = [
        TaskQuery(view=view),
        TaskQuery(view=view, page_size=2),
        TaskQuery(view=view, tags={"project": "p1"}),
        TaskQuery(view=view, owner="bob"),
        TaskQuery(view=view, name_prefix="align", state=State.RUNNING),
    ]
    for query in queries:
        page, documents = await store.list_tasks(query), await store.documents(query)
        assert [_decoded(d) for d in documents.documents] == [_decoded(encoded(t, view)) for t in page.tasks]
        assert documents.next_after == page.next_after
        if page.next_after is not None:
            following = msgspec.structs.replace(query, after=page.next_after)
            assert len((await store.documents(following)).documents) == len(
                (await store.list_tasks(following)).tasks
            )
