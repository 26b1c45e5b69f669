"""The database file as the operating system sees it: identity, the disk it is on, who holds it open.

Linux-specific where it reads /proc; elsewhere the answers degrade to "unknown" (never to a
wrong "nobody").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

COMPANIONS = ("", "-wal", "-shm", "-journal")


def identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path` now, or None when nothing is there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem holding `path`."""
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def read_only(folder: Path) -> bool:
    """Whether the filesystem holding `folder` is mounted read-only."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def device_of(path: Path) -> str:
    """'<mount point> (<device>)' for the filesystem holding `path`, e.g. '/var (/dev/sda2)'."""
    target = os.path.realpath(path.parent)
    best, source = "/", ""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            for line in fh:
                fields = line.split()
                mount = fields[4].replace("\\040", " ")
                dash = fields.index("-")
                if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                    best, source = mount, fields[dash + 2]
    except (OSError, ValueError, IndexError):
        return target
    return f"{best} ({source})" if source else best


@dataclass(frozen=True)
class Holder:
    """A process that has one of the database's files open."""

    pid: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command})"


def holders(path: Path) -> list[Holder] | None:
    """Other processes with the database, its WAL or its shared-memory file open (None: cannot tell).

    Reads /proc/<pid>/fd; processes we may not inspect are skipped, so run as the server's user
    (or root) for a complete answer.
    """
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return None
    wanted = {os.path.realpath(str(path) + suffix) for suffix in COMPANIONS}
    found: list[Holder] = []
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.removesuffix(" (deleted)") in wanted:
                found.append(Holder(int(entry.name), _command(entry)))
                break
    return sorted(found, key=lambda h: h.pid)


def _command(entry: Path) -> str:
    try:
        raw = (entry / "cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)[:200] or "?"
