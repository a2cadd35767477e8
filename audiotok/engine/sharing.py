"""An output folder shared by several runs (two people, a job array, machines on one file system):
the settings file that says what the folder holds, and claims that give each output to one run.

    OUT/settings.json            written by the first run: command and settings; later runs compare
    OUT/.audiotok/lock           locked (flock) while settings or claims are read or written
    OUT/.audiotok/runs/RUN       locked for the whole life of run RUN (who, where, when inside)
    OUT/.audiotok/claims/KEY     the RUN making output KEY (a hash of its name) right now

A run is alive exactly while the kernel holds its lock: a run killed with SIGKILL loses it at
once, so its claims count as free without any timeout, also for runs on other machines when the
file system passes locks on (local file systems, NFSv4). No torch, no numpy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import OutputError, UsageError
from ..files import display_path

SETTINGS_FILE = "settings.json"
STATE_DIR = ".audiotok"

# what each setting is called on the command line (for messages); others are shown by their key
OPTION_NAMES = {
    "command": "the command", "format": "--format", "keep_ext": "--keep-ext", "model": "--model",
    "bandwidth": "--bandwidth", "weights_sha256": "weights (sha256)", "checkpoint_sha256": "--checkpoint (sha256)",
    "layer": "--layer", "pooling": "--pool", "chunk_seconds": "--chunk-seconds", "overlap": "--overlap",
    "dtype": "--dtype",
}

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int, blocking: bool, shared: bool = False) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            if blocking:
                raise
            return False
else:
    import errno
    import fcntl

    _NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}

    def _lock(fd: int, blocking: bool, shared: bool = False) -> bool:
        """Lock ``fd``; False when another holds it (non-blocking). A file system without locks
        (some FUSE and NFS mounts) counts as locked: runs there cannot see each other's claims
        (docs/guarantees.md), but they run."""
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB))
            return True
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in _NO_LOCKS:
                return True
            raise


def _open(path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o666)


def _state_dir(root: Path) -> Path:
    state = Path(root) / STATE_DIR
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write to {display_path(str(state))} ({exc.strerror or exc}); "
                          "choose a writable output folder") from None
    return state


def _lock_folder(root: Path) -> int:
    """Open and lock ``ROOT/.audiotok/lock``; returns the locked descriptor (closing it unlocks).

    The last run to leave a folder removes ``.audiotok`` (under this lock), so a lock taken on a file
    that has been removed meanwhile is worth nothing: the file's identity is checked after locking
    and the lock taken again on the file that is there now."""
    for _ in range(1000):
        path = _state_dir(root) / "lock"
        try:
            try:
                fd = _open(path)
            except PermissionError:  # another user's folder: a read-only descriptor locks as well
                fd = _open(path, os.O_RDONLY)
        except FileNotFoundError:  # .audiotok removed between mkdir and open by a run that left
            continue
        except OSError as exc:
            raise OutputError(f"cannot open {display_path(str(path))} ({exc.strerror or exc}); remove it if it "
                              "is a link, or choose another output folder") from None
        _lock(fd, True)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
        except OSError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise OutputError(f"cannot lock {display_path(str(Path(root) / STATE_DIR / 'lock'))}; other runs keep "
                      "replacing it")  # pragma: no cover


@contextlib.contextmanager
def folder_lock(root: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of the output folder ``root`` (blocking; held for short steps only)."""
    fd = _lock_folder(Path(root))
    try:
        yield
    finally:
        os.close(fd)  # closing releases the lock


# --- the settings file -------------------------------------------------------------------------
def read_settings_file(root: str | os.PathLike) -> dict | None:
    """The content of ``ROOT/settings.json`` (None when there is none); a damaged file is a ``UsageError``."""
    path = Path(root) / SETTINGS_FILE
    try:
        fd = _open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{display_path(str(path))} cannot be read ({exc.strerror or exc}); it records what the "
                         "output folder holds: fix or remove it") from None
    with os.fdopen(fd, "rb") as f:
        raw = f.read(1 << 20)
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
            raise ValueError("no settings object")
    except ValueError as exc:
        raise UsageError(f"{display_path(str(path))} is damaged ({exc}); it records what the output folder holds: "
                         "remove it if the folder holds outputs of the command and settings you are running now, "
                         "or pass --overwrite") from None
    return data


def _show(key: str, value: Any) -> str:
    name = OPTION_NAMES.get(key, key)
    if value is None:
        return f"no {name}"
    if isinstance(value, bool) and key == "keep_ext":
        return f"{name} {'on' if value else 'off'}"
    if isinstance(value, float):
        return f"{name} {value:g}"
    return f"{name} {value if isinstance(value, (int, str)) else json.dumps(value, sort_keys=True)}"


def first_difference(stored: dict, wanted: dict) -> tuple[str, Any, Any] | None:
    """``(key, stored value, wanted value)`` of the first setting in ``wanted`` that ``stored`` holds
    otherwise (a key ``stored`` lacks counts as a difference); None when they agree."""
    missing = object()
    for key, value in wanted.items():
        have = stored.get(key, missing)
        if have is missing or json.dumps(have, sort_keys=True) != json.dumps(value, sort_keys=True):
            return key, (None if have is missing else have), value
    return None


class Checked(NamedTuple):
    note: str | None  # for stderr (--overwrite changed the folder's settings)
    created: bool  # this call wrote the folder's first settings file


def check_folder_settings(root: str | os.PathLike, command: str, settings: dict, *, overwrite: bool = False,
                          write: bool = True, merge: bool = False) -> Checked:
    """Compare what this run writes with what the folder ``root`` holds (``ROOT/settings.json``).

    The first run writes the file. A later run whose command or settings differ in any key of
    ``settings`` is refused (``UsageError`` naming the setting) unless ``overwrite``: then the file
    is rewritten with the new settings and a note is returned (outputs not redone keep the old
    ones). ``merge``: keys the file lacks are added instead of being differences (``score
    --frames``: one setting per model name). ``write=False`` (dry runs) only compares. Returns a
    note for stderr, or None."""
    root = Path(root)
    wanted = {"command": command, **settings}
    with folder_lock(root) if write else contextlib.nullcontext():
        data = read_settings_file(root)
        stored = None if data is None else {"command": data.get("command"), **data["settings"]}
        if stored is None:
            if write:
                _write_settings(root, wanted)
            return Checked(None, write)
        check = {k: v for k, v in wanted.items() if k in stored} if merge else wanted
        diff = first_difference(stored, check)
        if diff is None:
            if write and merge and any(k not in stored for k in wanted):
                _write_settings(root, {**stored, **wanted})
            return Checked(None, False)
        key, have, asked = diff
        shown = display_path(str(root))
        if not overwrite:
            raise UsageError(f"{shown} holds outputs made with {_show(key, have)} (asked now: {_show(key, asked)}; "
                             f"{SETTINGS_FILE} there records the folder's settings); one output folder holds one "
                             "setting: rerun with the folder's settings, write to another -o, or pass --overwrite "
                             "to redo these inputs with the new settings")
        if write:
            _write_settings(root, {**stored, **wanted} if merge else wanted)
        return Checked(f"note: --overwrite: {shown}/{SETTINGS_FILE} now records {_show(key, asked)} (was "
                       f"{_show(key, have)}); outputs of inputs this run does not redo keep the old settings", False)


def _write_settings(root: Path, settings: dict) -> None:
    from .. import __version__
    from ..files import atomic_write

    body = {"command": settings["command"], "settings": {k: v for k, v in settings.items() if k != "command"},
            "audiotok": __version__, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    text = (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
    atomic_write(root / SETTINGS_FILE, lambda f: f.write(text))


# --- runs and claims ---------------------------------------------------------------------------
class Claims:
    """Claims on outputs of one output folder, for one run: ``take(ident)`` before an output is made
    (None: it is this run's now; else who holds it), ``release(ident)`` once the output is on disk
    (or failed), ``close()`` at the end. Claims of runs that are gone count as free."""

    def __init__(self, root: str | os.PathLike, namespace: str = ""):
        self.root = Path(root)
        self.namespace = namespace
        self.run_id = secrets.token_hex(8)
        self.held: set[str] = set()
        self._run_fd: int | None = None
        self._state: Path | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def open(self) -> Claims:
        with folder_lock(self.root):
            state = _state_dir(self.root)
            (state / "runs").mkdir(exist_ok=True)
            (state / "claims").mkdir(exist_ok=True)
            self._state = state
            fd = _open(state / "runs" / self.run_id, os.O_RDWR | os.O_CREAT | os.O_EXCL)
            _lock(fd, True)
            info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.write(fd, json.dumps(info).encode())
            self._run_fd = fd
            self._remove_dead()
        return self

    def __enter__(self) -> Claims:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release every claim; the last run to leave removes ``.audiotok`` (nothing is left behind)."""
        if self._run_fd is None:
            return
        state = self._state
        with folder_lock(self.root):
            for key in list(self.held):
                self._unlink(key)
            self.held.clear()
            with contextlib.suppress(OSError):
                os.unlink(state / "runs" / self.run_id)
            os.close(self._run_fd)
            self._run_fd = None
            with contextlib.suppress(OSError):
                if any(os.scandir(state / "runs")) or any(os.scandir(state / "claims")):
                    return  # another run is here (runs and claims are only made under this lock)
                (state / "claims").rmdir()
                (state / "runs").rmdir()
                (state / "lock").unlink()  # runs waiting for the lock see it is on a removed file, and retry
                state.rmdir()

    # --- claims ------------------------------------------------------------------------------
    def key(self, ident: str) -> str:
        return hashlib.sha256(f"{self.namespace}\0{ident}".encode("utf-8", "surrogateescape")).hexdigest()[:40]

    def take(self, ident: str) -> str | None:
        """Claim output ``ident`` for this run. Returns None when it is ours (also when it was a dead
        run's), or a description of the live run that holds it."""
        key = self.key(ident)
        if key in self.held:
            return None
        path = self._state / "claims" / key
        with folder_lock(self.root):
            holder = _read_small(path)
            if holder and holder != self.run_id and self._alive(holder):
                return self.describe(holder)
            if holder is not None:  # a claim left by a run that is gone (maybe another user's file)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            fd = _open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            try:
                os.write(fd, self.run_id.encode())
            finally:
                os.close(fd)
        self.held.add(key)
        return None

    def release(self, ident: str) -> None:
        key = self.key(ident)
        if key in self.held:
            self.held.discard(key)
            self._unlink(key)

    def _unlink(self, key: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._state / "claims" / key)

    # --- other runs --------------------------------------------------------------------------
    def _alive(self, run_id: str) -> bool:
        """Whether run ``run_id`` still holds its lock (it is running, here or on another machine)."""
        if not run_id.isalnum():
            return False
        try:
            fd = _open(self._state / "runs" / run_id, os.O_RDONLY)
        except OSError:
            return False
        try:
            return not _lock(fd, False, shared=True)
        finally:
            os.close(fd)

    def describe(self, run_id: str) -> str:
        info = {}
        with contextlib.suppress(ValueError):
            info = json.loads(_read_small(self._state / "runs" / run_id) or "{}")
        if not isinstance(info, dict) or "pid" not in info:
            return "another run"
        return f"another run (pid {info['pid']} on {info.get('host', '?')}, started {info.get('started', '?')})"

    def _remove_dead(self) -> None:
        """Remove the run files and claims of runs that are gone (killed); called under the folder lock."""
        runs = self._state / "runs"
        alive = {self.run_id}
        for entry in list(os.scandir(runs)):
            if entry.name == self.run_id:
                continue
            if self._alive(entry.name):
                alive.add(entry.name)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
        for entry in list(os.scandir(self._state / "claims")):
            if _read_small(Path(entry.path)) not in alive:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _read_small(path: Path) -> str | None:
    try:
        fd = _open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).decode("utf-8", "replace").strip()
    finally:
        os.close(fd)
