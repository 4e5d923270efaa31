"""Host facts for ``hello`` and enrollment: what this machine is, read once per process.

Each fact degrades to a plain default rather than failing: an agent on an
odd distribution or in a container must still connect, and the server shows
what it got. Strings are cut to the schema's bounds here so that a very long
hostname or os-release value cannot make the hello frame unencodable.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import psutil

from beeyard.agent.procfs import read_text

_DMI_VENDORS = (  # substrings of /sys/class/dmi/id values → systemd-detect-virt's names
    ("kvm", "kvm"), ("qemu", "qemu"), ("vmware", "vmware"), ("virtualbox", "oracle"),
    ("innotek", "oracle"), ("xen", "xen"), ("microsoft corporation", "microsoft"),
    ("amazon ec2", "amazon"), ("google compute engine", "google"), ("bochs", "bochs"),
    ("parallels", "parallels"), ("openstack", "kvm"), ("digitalocean", "kvm"),
)


def os_name(root: Path = Path("/")) -> str:
    """PRETTY_NAME from os-release (NAME VERSION_ID when it is missing)."""
    for candidate in ("etc/os-release", "usr/lib/os-release"):
        text = read_text(root / candidate)
        if not text:
            continue
        values: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip("\"'")
        name = values.get("PRETTY_NAME") or " ".join(
            v for v in (values.get("NAME"), values.get("VERSION_ID")) if v
        )
        if name:
            return name
    return "Linux"


def cpu_model(cpuinfo: str | None = None) -> str | None:
    text = read_text(Path("/proc/cpuinfo")) if cpuinfo is None else cpuinfo
    fields: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "hardware", "cpu model", "cpu", "processor"):
        value = fields.get(key, "")
        if value and not value.isdigit():  # "processor : 0" on x86 is an index
            return value
    return None


def virtualization(root: Path = Path("/"), use_systemd: bool = True) -> str | None:
    """systemd-detect-virt when present, else DMI strings, else the cpuinfo
    ``hypervisor`` flag ("vm": some hypervisor), else None (bare metal)."""
    tool = shutil.which("systemd-detect-virt") if use_systemd else None
    if tool:
        try:
            done = subprocess.run(
                [tool], capture_output=True, text=True, timeout=5, check=False
            )
            answer = done.stdout.strip()
            if answer and answer != "none":
                return answer[:64]
            if done.returncode in (0, 1) and answer == "none":
                return None
        except (OSError, subprocess.SubprocessError):
            pass
    dmi = " ".join(
        (read_text(root / "sys/class/dmi/id" / name) or "").strip().lower()
        for name in ("sys_vendor", "product_name", "bios_vendor")
    )
    for needle, name in _DMI_VENDORS:
        if needle in dmi:
            return name
    cpuinfo = read_text(root / "proc/cpuinfo") or ""
    for line in cpuinfo.splitlines():
        if line.startswith("flags") and " hypervisor" in line:
            return "vm"
    return None


def addresses() -> list[str]:
    """Non-loopback, non-link-local IP addresses of every interface."""
    out: list[str] = []
    try:
        interfaces = psutil.net_if_addrs()
    except OSError:
        return out
    for entries in interfaces.values():
        for entry in entries:
            if entry.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            text = entry.address.split("%", 1)[0]
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue
            if ip.is_loopback or ip.is_link_local or ip.is_unspecified:
                continue
            if text not in out:
                out.append(text)
    return out[:1024]


def host_facts() -> dict[str, Any]:
    """The ``Host`` map of the hello frame and of the enrollment request."""
    uname = os.uname()
    logical = os.cpu_count() or 1
    try:
        physical = psutil.cpu_count(logical=False)
    except (OSError, RuntimeError):
        physical = None
    model = cpu_model()
    return {
        "hostname": (socket.gethostname() or uname.nodename or "localhost")[:255],
        "os": os_name()[:255],
        "kernel": uname.release[:255],
        "arch": uname.machine[:64],
        "cpu_model": model[:255] if model else None,
        "cores": max(1, min(logical, 65536)),
        "physical_cores": physical if physical and 1 <= physical <= 65536 else None,
        "virtualization": virtualization(),
        "boot_time": float(psutil.boot_time()),
        "addresses": [a for a in addresses() if len(a) <= 64],
    }
