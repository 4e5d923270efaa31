#!/usr/bin/env python3
"""Refresh the web UI's vendored browser libraries from the npm registry.

The pins live in server/src/beeyard/server/web/vendor.json: for each npm package its
version, the registry's integrity hash of the tarball, and the files we keep with the
SHA-256 of each. Only those files are committed, under web/static/vendor/<package>/,
at their path inside the package (``dist/uPlot.iife.min.js`` stays under ``dist/``).

    scripts/vendor-web.py                    fetch every package at its pinned version
    scripts/vendor-web.py swagger-ui-dist@5.36.0   re-pin one package, then fetch it
    scripts/vendor-web.py --check            verify the committed files (offline)

Fetching uses `npm pack` (npm's own client, registry and cache settings). A pinned
version whose tarball no longer matches the recorded integrity is refused.
To add a package, add an entry with its version and file list and run the script.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "server" / "src" / "beeyard" / "server" / "web"
LOCK = WEB / "vendor.json"
VENDOR = WEB / "static" / "vendor"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load() -> dict[str, Any]:
    return json.loads(LOCK.read_text())  # type: ignore[no-any-return]


def save(lock: dict[str, Any]) -> None:
    LOCK.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")


def check(lock: dict[str, Any]) -> list[str]:
    """Problems with the committed files: missing, changed, or not in the lock."""
    problems = []
    for name, pin in lock["packages"].items():
        folder = VENDOR / name
        for file, digest in pin["files"].items():
            path = folder / file
            if not path.is_file():
                problems.append(f"{name}: {file} is missing")
            elif digest and sha256(path) != digest:
                problems.append(f"{name}: {file} differs from {name}@{pin['version']}")
        if folder.is_dir():
            extra = set(relative_files(folder)) - set(pin["files"])
            problems += [f"{name}: {file} is not in vendor.json" for file in sorted(extra)]
    known = set(lock["packages"])
    if VENDOR.is_dir():
        problems += [
            f"{name}: folder not in vendor.json"
            for name in package_folders()
            if name not in known
        ]
    return problems


def package_folders() -> list[str]:
    """The package names that have a folder under ``VENDOR``; a scoped package
    (``@xterm/xterm``) sits one level down, in its scope's folder."""
    names = []
    for p in sorted(VENDOR.iterdir()):
        if p.is_dir() and p.name.startswith("@"):
            names += [f"{p.name}/{q.name}" for q in sorted(p.iterdir()) if q.is_dir()]
        elif p.is_dir():
            names.append(p.name)
    return names


def relative_files(folder: Path) -> list[str]:
    """Every file under ``folder``, as a POSIX path relative to it (pins may name
    files in a package's subfolders, such as ``dist/uPlot.iife.min.js``)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def fetch(name: str, pin: dict[str, Any]) -> None:
    version = pin["version"]
    with tempfile.TemporaryDirectory(prefix="beeyard-vendor-") as tmp:
        out = subprocess.run(
            ["npm", "pack", f"{name}@{version}", "--json", "--pack-destination", tmp],
            check=True, capture_output=True, text=True,
        ).stdout
        info = json.loads(out)[0]
        tarball = Path(tmp) / info["filename"]
        algo, _, expected = info["integrity"].partition("-")
        actual = base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode()
        if actual != expected:
            sys.exit(f"{name}@{version}: tarball does not match the registry's integrity")
        if pin.get("integrity") and pin["integrity"] != info["integrity"]:
            sys.exit(
                f"{name}@{version}: the registry's tarball changed since it was pinned "
                f"({pin['integrity']} → {info['integrity']}); refusing it"
            )
        folder = VENDOR / name
        staging = Path(tmp) / "out"
        staging.mkdir()
        with tarfile.open(tarball) as tar:
            for file in pin["files"]:
                if file.startswith("/") or ".." in file.split("/"):
                    sys.exit(f"{name}: {file} must be a plain path inside the package")
                member = tar.getmember(f"package/{file}")
                if not member.isfile():
                    sys.exit(f"{name}@{version}: {file} is not a regular file")
                source = tar.extractfile(member)
                assert source is not None
                target = staging / file
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read())
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(staging, folder)
        pin["integrity"] = info["integrity"]
        pin["files"] = {file: sha256(folder / file) for file in sorted(pin["files"])}
    print(f"vendored {name}@{version}: {', '.join(pin['files'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pin", nargs="*", help="NAME@VERSION to re-pin before fetching")
    parser.add_argument("--check", action="store_true", help="verify committed files, offline")
    args = parser.parse_args()
    lock = load()
    if args.check:
        problems = check(lock)
        for p in problems:
            print(p, file=sys.stderr)
        return 1 if problems else 0
    for spec in args.pin:
        name, _, version = spec.rpartition("@")
        if not name or name not in lock["packages"]:
            parser.error(f"{spec}: expected NAME@VERSION of a package in vendor.json")
        if lock["packages"][name]["version"] != version:
            lock["packages"][name].update(version=version, integrity="")
    names = [s.rpartition("@")[0] for s in args.pin] or list(lock["packages"])
    for name in names:
        fetch(name, lock["packages"][name])
        save(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
