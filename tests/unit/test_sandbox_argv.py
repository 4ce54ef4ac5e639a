"""The command lines the local runtimes build: what a task is given and what it is denied."""

from __future__ import annotations

from poiesis.adapters.local.sandbox import Bubblewrap, Container, Launch

LAUNCH = Launch(
    name="poiesis-t-0", image="alpine", command=["true"], mounts={"/data/x": "/ws/t/volume/data/x"}
)


def test_the_sandbox_drops_everything_and_has_no_network_by_default() -> None:
    argv = Bubblewrap("/usr/bin/bwrap").argv(LAUNCH)
    for flag in ("--unshare-user", "--disable-userns", "--new-session", "--unshare-net", "--unshare-pid"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("/ws/t/volume/data/x") - 1] == "--bind"
    assert "/var" not in [argv[i + 1] for i, a in enumerate(argv) if a == "--ro-bind"]


def test_the_host_network_is_an_explicit_choice() -> None:
    assert "--unshare-net" not in Bubblewrap("/usr/bin/bwrap", host_network=True).argv(LAUNCH)


def test_containers_drop_capabilities_and_the_network() -> None:
    argv = Container("docker").argv(LAUNCH)
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--security-opt") + 1] == "no-new-privileges"
    assert argv[argv.index("--network") + 1] == "none"
    assert (
        Container("podman", host_network=True).argv(LAUNCH)[
            Container("podman", host_network=True).argv(LAUNCH).index("--network") + 1
        ]
        == "host"
    )
