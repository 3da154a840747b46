"""Atomic file writes: a killed run leaves either the old file or the new one, never half of one.

Every file and directory made here gets the permissions the umask allows (0644 / 0755 under the
usual umask 022), not the 0600 / 0700 of ``tempfile``. A whole directory (a package, a run's
output set) is built beside its target and swapped in with one rename, so a reader sees the
complete old set or the complete new one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


def umask() -> int:
    """The process umask, read without changing it (Linux /proc), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to a temp file in ``path``'s directory, then rename it over ``path``."""
    write_atomic_chunks(path, [data.encode() if isinstance(data, str) else data])


def write_atomic_chunks(path: Path, chunks: Iterable[bytes]) -> None:
    """Like :func:`write_atomic` for a file too large to hold in memory: ``chunks`` are written in turn."""
    fd, tmp = _new_temp(path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_HOST = socket.gethostname()


def _new_temp(folder: Path) -> tuple[int, str]:
    """A new file in ``folder`` (made if missing), opened for writing, with the permissions the
    umask allows: the kernel applies it to mode 0666 (a measurement cache writes thousands of
    small entries; tempfile.mkstemp's 0600 would need the umask read and a chmod for each).
    Its name, ``.tmp-HOST-PID-RANDOM``, tells :func:`remove_dead_temps` whose it is."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(100):
        tmp = os.path.join(folder, f".tmp-{_HOST}-{os.getpid()}-{os.urandom(6).hex()}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
        except FileNotFoundError:
            folder.mkdir(parents=True, exist_ok=True)
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(folder))


def remove_dead_temps(root: Path) -> None:
    """Delete the temp files under ``root`` that a killed process of this host left (a SIGKILL
    mid-write cannot be cleaned up by the writer). Files of live processes, and of other hosts
    sharing the directory, are left alone."""
    for path in root.rglob(".tmp-*"):
        host, pid, _ = path.name[len(".tmp-"):].rsplit("-", 2) if path.name.count("-") >= 3 else ("", "", "")
        if host == _HOST and pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def staging_dir(target: Path) -> Path:
    """A new empty directory beside ``target`` (same file system, so it can be renamed onto it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-"))
    path.chmod(0o777 & ~umask())
    return path


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_dir(staging: Path, target: Path) -> None:
    """Put the complete directory ``staging`` in place of ``target`` and remove the old one.

    ``target`` is never missing a complete version: it is either absent before the call, or
    swapped with the new one in a single rename (where the file system cannot swap, the old one
    is first renamed aside, a window of two renames).
    """
    try:
        os.rename(staging, target)  # no target yet (or an empty one)
        return
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if _exchange(staging, target):
        shutil.rmtree(staging)  # now holds the old version
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    os.rename(target, old / "x")
    os.rename(staging, target)
    shutil.rmtree(old)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed) for the block: concurrent runs
    publishing into one place take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the kernel applies the umask
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
