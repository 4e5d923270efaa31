"""Two agents side by side: the working tree's and an earlier revision's, same server, same time.

Usage (from the repository root)::

    python tests/bench/agent_side_by_side.py REV [SECONDS]

The agent's CPU per sample is at the mercy of whatever else runs on the machine (on a
shared 2-core VM it moved between 0.8 and 1.2 ms from one run to the next), so a
before/after comparison is only fair when both run at once. This starts one
``beeyard-server``, enrolls two agents through the API, runs the working tree's agent
and ``git archive REV agent`` (its C modules built in place when it has them; imported first
through ``sys.path``) at the default 1 s interval, out of phase (so that one's sample
never warms the caches for the other's). Beside them run floor processes that wake
once a second and do only that, or also make the agent's reads, or the reads and a
sample-sized send over loopback, in Python on an asyncio timer as the agent does; when
a C compiler is found, the first and the last again in C, and a prototype sampler
written in C and called from the same asyncio timer. It prints each one's CPU per
second from ``/proc/PID/schedstat`` (nanoseconds) over SECONDS (default 300) after a
15 s warm-up. Every process started here is stopped by its PID.
"""

from __future__ import annotations

import glob
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serverproc import clean_env, request, start_server, stop_postgres

PASSWORD = "a benchmark passphrase"
WARMUP = 15.0
# The floor: an asyncio process waking once a second on a timer, as the agent does, that
# makes the agent's system calls (argv[1]: the files it re-reads with one pread each, plus
# a statvfs of / and an fstat of /proc) and sends a sample-sized message over loopback TCP
# (argv[2]: the port of a sink that reads it; 0 for none), but parses and builds nothing.
# With argv[3], the directory of the C sampler prototype (floors/sampler.c), each tick
# instead sends what its sample() returns: the same reads, parsed, packed and framed in C.
FLOOR = """
import asyncio, gc, os, sys
files = [f for f in sys.argv[1].split(",") if f]
port = int(sys.argv[2])
sampler = None
if len(sys.argv) > 3:
    sys.path.insert(0, sys.argv[3])
    import sampler
    sampler.open(files)
    files = []
async def main():
    loop = asyncio.get_running_loop()
    fds = [os.open(f, os.O_RDONLY) for f in files]
    proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    writer = (await asyncio.open_connection("127.0.0.1", port))[1] if port else None
    payload = os.urandom(861)
    due = loop.time()
    def tick():
        nonlocal due
        for fd in fds:
            os.pread(fd, 65536, 0)
        if fds:
            os.statvfs("/")
            os.fstat(proc)
        if writer is not None:
            writer.write(sampler.sample() if sampler is not None else payload)
        due += 1.0
        loop.call_at(due, tick)
    loop.call_soon(tick)
    gc.freeze()  # as the agent does after start-up
    await asyncio.Event().wait()
asyncio.run(main())
"""
# The same floor in C, and the C sampler prototype (tests/bench/floors/; compiled when a C
# compiler is found): what these system calls cost with no interpreter around them, and
# what the agent would cost with its per-second Python work in C.
FLOORS_C = Path(__file__).resolve().parent / "floors"
AGENT_FILES = ["/proc/stat", "/proc/loadavg", "/proc/meminfo", "/proc/net/dev",
               "/proc/net/sockstat", "/proc/net/sockstat6"]
LAUNCHER = """import sys
sys.path.insert(0, {src!r})
import beeyard.agent
assert beeyard.agent.__file__.startswith({src!r}), beeyard.agent.__file__
from beeyard.agent.cli import main
sys.exit(main())
"""


def cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def drain(sink: socket.socket) -> None:
    """Accept the floor processes' connections and read what they send, as a server would."""
    while True:
        try:
            conn, _ = sink.accept()
        except OSError:  # closed at the end
            return
        threading.Thread(target=read_all, args=(conn,), daemon=True).start()


def read_all(conn: socket.socket) -> None:
    with conn:
        while conn.recv(65536):
            pass


def floors(work: Path, reads: str, port: int) -> dict[str, list[str]]:
    """The floor processes' command lines: Python's, and C's when a compiler is found."""
    found = {"floor: wake-up": [sys.executable, "-c", FLOOR, "", "0"],
             "floor: + the agent's reads": [sys.executable, "-c", FLOOR, reads, "0"],
             "floor: + reads + a send": [sys.executable, "-c", FLOOR, reads, str(port)]}
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("no C compiler: the C floors are left out")
        return found
    subprocess.run([cc, "-O2", "-o", str(work / "floor"), str(FLOORS_C / "floor.c")], check=True)
    found["C floor: wake-up"] = [str(work / "floor"), "", "0"]
    found["C floor: + reads + a send"] = [str(work / "floor"), reads, str(port)]
    headers = sysconfig.get_paths()["include"]
    if not (Path(headers) / "Python.h").exists():
        print(f"no Python.h in {headers}: the C sampler prototype is left out")
        return found
    module = work / f"sampler{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run([cc, "-O2", "-shared", "-fPIC", f"-I{headers}", "-o", str(module),
                    str(FLOORS_C / "sampler.c")], check=True)
    found["C sampler, asyncio timer"] = [sys.executable, "-c", FLOOR, reads, str(port),
                                         str(work)]
    return found


def build_c_modules(agent: Path) -> None:
    """Build REV's optional C modules in place, as ``pip install`` would (from 5ebe190
    on: the C sampler), so that both agents run what a user would get on this machine.
    With the compiler directly, as for the floors: REV's setup.py may want another
    setuptools than this environment's."""
    cc = shutil.which("cc") or shutil.which("gcc")
    headers = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    src = agent / "src" / "beeyard" / "agent"
    for source in (src / "_frame.c", src / "collectors" / "_native.c"):
        if not source.exists():
            continue  # a revision before this module
        if cc is None:
            print(f"no C compiler: the old revision runs without {source.name}")
            continue
        subprocess.run([cc, "-O2", "-shared", "-fPIC", f"-I{headers}", f"-I{src}", "-o",
                        str(source.with_suffix(suffix)), str(source)], check=True)


def main() -> None:
    rev = sys.argv[1]
    # stopped early (SIGTERM): still stop every process started here, in the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 300.0
    work = Path(tempfile.mkdtemp(prefix="beeyard-side-by-side-"))
    work.chmod(0o711)
    archive = subprocess.run(["git", "archive", rev, "agent"], capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(work / "old", filter="data")
    build_c_modules(work / "old" / "agent")
    (work / "old.py").write_text(LAUNCHER.format(src=str(work / "old" / "agent" / "src")))
    variants = {rev: [sys.executable, str(work / "old.py")],
                "working tree": [sys.executable, "-m", "beeyard.agent.cli"]}
    server = start_server(work / "data", env={"BEEYARD_ADMIN_PASSWORD": PASSWORD})
    procs: dict[str, subprocess.Popen[bytes]] = {}
    sink = socket.create_server(("127.0.0.1", 0))
    try:
        server.wait_ready()
        resp = server.login(PASSWORD)
        admin = {"Cookie": resp.headers["Set-Cookie"].split(";", 1)[0],
                 "X-CSRF-Token": resp.json()["data"]["csrf_token"]}
        for i, cmd in enumerate(variants.values()):
            code = request(server.port, "POST", "/api/agent/enrollments", {},
                           headers=admin).json()["data"]["code"]
            d = work / f"agent{i}"
            d.mkdir()
            subprocess.run(
                [*cmd, "enroll", "--server", f"http://127.0.0.1:{server.port}", "--code", code,
                 "--name", f"agent{i}", "--config", str(d / "agent.toml"),
                 "--token-file", str(d / "token"), "--spool-dir", str(d / "spool")],
                capture_output=True, env=clean_env(), check=True, timeout=60)
        for i, (name, cmd) in enumerate(variants.items()):
            d = work / f"agent{i}"
            procs[name] = subprocess.Popen(
                [*cmd, "run", "--config", str(d / "agent.toml")], stdin=subprocess.DEVNULL,
                stdout=(d / "log").open("wb"), stderr=subprocess.STDOUT, env=clean_env())
            time.sleep(0.37)  # out of phase with the previous one
        threading.Thread(target=drain, args=(sink,), daemon=True).start()
        disks = [f"{d}/stat" for d in glob.glob("/sys/block/*") if os.path.exists(f"{d}/device")]
        reads = ",".join(AGENT_FILES + disks)
        for name, cmd in floors(work, reads, sink.getsockname()[1]).items():
            procs[name] = subprocess.Popen(cmd)
            time.sleep(0.11)  # out of phase
        time.sleep(WARMUP)
        start = {name: cpu_ns(p.pid) for name, p in procs.items()}
        began = time.monotonic()
        loads = [os.getloadavg()[0]]
        while (left := seconds - (time.monotonic() - began)) > 0:
            time.sleep(min(10.0, left))
            loads.append(os.getloadavg()[0])
            for name, p in procs.items():
                assert p.poll() is None, f"{name} exited"
        window = time.monotonic() - began
        print(f"{window:.0f} s window, load average (1 min) {min(loads):.2f}-{max(loads):.2f}")
        for name, p in procs.items():
            per_second = (cpu_ns(p.pid) - start[name]) / 1e6 / window
            print(f"  {name:28s} {per_second:.3f} ms CPU per second, RSS {rss_mb(p.pid):.1f} MB")
    finally:
        for p in procs.values():
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        sink.close()
        server.stop()
        stop_postgres(work / "data")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
