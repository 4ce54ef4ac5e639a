from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poiesis.domain.staging import join_url, mount_dirs, outermost, redact, wildcard_root, wildcard_target
from poiesis.domain.submission import NewInput, NewOutput
from poiesis.domain.tes import FileType
from tests.builders import make_task
from tests.conftest import FakeClock


@pytest.mark.parametrize(
    ("url", "prefix", "match", "expected"),
    [
        ("s3://b/out", "/data/", "/data/a.txt", "s3://b/out/a.txt"),
        ("s3://b/out/", "/data/", "/data/a.txt", "s3://b/out/a.txt"),
        ("s3://b/out/", "/data", "/data/a.txt", "s3://b/out/a.txt"),
        ("s3://b/out", "/data", "/data/sub/x/y.txt", "s3://b/out/sub/x/y.txt"),
        ("https://h/put/", "/data/", "/data/r 1.txt", "https://h/put/r 1.txt"),
    ],
)
def test_a_wildcard_match_goes_to_url_plus_the_match_minus_the_prefix(
    url: str, prefix: str, match: str, expected: str
) -> None:
    assert wildcard_target(url, prefix, match) == expected


segment = st.text(alphabet="abcXYZ019._- ", min_size=1, max_size=8).filter(lambda s: s not in {".", ".."})


@given(
    base=st.sampled_from(["s3://b", "s3://b/", "s3://b/p//", "ftp://h/d/"]),
    parts=st.lists(segment, min_size=1, max_size=4),
)
def test_join_url_puts_exactly_one_slash_between(base: str, parts: list[str]) -> None:
    relative = "/".join(parts)
    joined = join_url(base, "/" + relative)
    assert joined == base.rstrip("/") + "/" + relative
    assert "//" not in joined.split("://", 1)[1]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("ftp://user:secret@127.0.0.1:21/a/b", "ftp://127.0.0.1:21/a/b"),
        ("https://h/k?X-Amz-Signature=abc&X-Amz-Credential=x#frag", "https://h/k"),
        ("s3://bucket/key", "s3://bucket/key"),
    ],
)
def test_redacted_urls_keep_the_location_and_drop_secrets(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_wildcard_root_is_the_directory_above_the_first_wildcard() -> None:
    assert wildcard_root("/data/out/*.txt") == "/data/out"
    assert wildcard_root("/data/run-*/x/*.bam") == "/data"
    assert wildcard_root("/data/a?.txt") == "/data"


def test_mount_dirs_cover_every_path_with_no_dir_inside_another() -> None:
    task = make_task(
        FakeClock(),
        inputs=[
            NewInput(path="/data/in/a.txt", type=FileType.FILE, content="a"),
            NewInput(path="/data/in/b.txt", type=FileType.FILE, content="b"),
            NewInput(path="/ref/genome", type=FileType.DIRECTORY, url="s3://b/g"),
            NewInput(path="/ref/genome/extra/x.fa", type=FileType.FILE, url="s3://b/x"),
        ],
        outputs=[
            NewOutput(path="/data/out/*.bam", url="s3://b/o", type=FileType.FILE, path_prefix="/data/out"),
            NewOutput(path="/results/summary.txt", url="s3://b/s", type=FileType.FILE),
        ],
        volumes=["/scratch", "/data/in/tmp"],
    )
    assert mount_dirs(task) == ["/data/in", "/data/out", "/ref/genome", "/results", "/scratch"]


def _outermost_by_definition(dirs: list[str]) -> list[str]:
    return sorted({d for d in dirs if not any(o != d and (d + "/").startswith(o + "/") for o in dirs)})


@given(st.lists(st.from_regex(r"\A(/[ab\-.]{1,2}){1,4}\Z"), max_size=30))
def test_outermost_is_the_directories_inside_no_other(dirs: list[str]) -> None:
    assert outermost(dirs) == _outermost_by_definition(dirs)


def test_outermost_of_many_directories_stays_linear() -> None:
    dirs = [f"/data/d{i}/sub" for i in range(50_000)] + ["/data/d7"]
    got = outermost(dirs)
    assert len(got) == 50_000
    assert "/data/d7/sub" not in got
