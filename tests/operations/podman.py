"""A real Docker-API engine for the Docker tests: podman serving the Docker API on
a unix socket (docs/docker.md, RECIPES: no Docker daemon on these machines).

Everything podman keeps lives in the test session's own directory (storage,
run state, events log, its config), so the tests neither see nor touch any other
containers on the machine. The one image is a busybox root filesystem imported
from a tarball made here: no registry is needed. The service is started once per
session and stopped by its PID; every container it made is removed first.

Without podman (or runc, or a static busybox) the Docker tests skip, except under
``BEEYARD_REQUIRE_ALL=1`` (CI), where they fail: `.ci/run` installs them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.serverproc import REQUIRE_ALL, stop_process

IMAGE = "localhost/beeyard-test-bb:latest"
BUSYBOX = ("/bin/busybox", "/usr/bin/busybox")
APPLETS = ("sh", "sleep", "echo", "cat", "ls", "seq", "date", "true")

CONTAINERS_CONF = """\
[containers]
default_ulimits = []          # the default ulimits fail here: setrlimit not permitted
[engine]
runtime = "runc"              # crun fails: cgroups in hybrid mode not supported
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"
tmp_dir = "{tmp}"
"""


@dataclass
class Podman:
    """The running engine: its API URL and a docker SDK client on it."""

    url: str
    client: Any  # docker.DockerClient
    image: str
    proc: subprocess.Popen[bytes]

    def run(self, name: str, command: list[str], **kwargs: Any) -> Any:
        """Start a container of the test image (no network: nothing leaves the host)."""
        kwargs.setdefault("network_mode", "none")
        return self.client.containers.run(self.image, command, name=name, detach=True,
                                          **kwargs)


def missing(what: str) -> None:
    message = f"{what}; install podman, runc and busybox-static (.ci/run does)"
    if REQUIRE_ALL:
        pytest.fail(message + " and BEEYARD_REQUIRE_ALL=1 forbids skipping")
    pytest.skip(message)


def start(base: Path) -> Podman:
    podman = shutil.which("podman")
    if podman is None or shutil.which("runc") is None:
        missing("podman or runc is not installed")
    busybox = next((p for p in BUSYBOX if os.path.exists(p)), None)
    if busybox is None:
        missing("no static busybox for the test image")
    try:
        import docker
    except ImportError:
        missing("the docker Python package is not installed")
    assert podman is not None and busybox is not None
    (base / "tmp").mkdir()
    conf = base / "containers.conf"
    conf.write_text(CONTAINERS_CONF.format(events=base / "events.log", tmp=base / "tmp"))
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    # vfs: plain directories, no overlay mount left behind for the temp dir's cleanup
    cmd = [podman, "--root", str(base / "root"), "--runroot", str(base / "run"),
           "--storage-driver", "vfs"]

    tarball = base / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    subprocess.run([*cmd, "import", str(tarball), IMAGE], env=env, check=True,
                   capture_output=True, timeout=60)

    sock = base / "podman.sock"
    log = (base / "service.log").open("ab")
    proc = subprocess.Popen([*cmd, "system", "service", "--time=0", f"unix://{sock}"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    url = f"unix://{sock}"
    deadline = time.monotonic() + 30
    while True:
        if sock.exists():
            try:
                client = docker.DockerClient(base_url=url, timeout=30)
                client.ping()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError("podman system service did not start: "
                               + (base / "service.log").read_text(errors="replace")[-2000:])
        time.sleep(0.05)
    return Podman(url, client, IMAGE, proc)


def stop(engine: Podman) -> None:
    """Remove every container the tests made, then stop the service by its PID."""
    try:
        for container in engine.client.containers.list(all=True):
            container.remove(force=True)
    finally:
        engine.client.close()
        stop_process(engine.proc)
