"""The work directory: the lock, atomic writes and writability checks.

Nothing here imports JAX, so a process that only needs the lock (a test, a
tool) starts at once.

* :class:`WorkdirLock`: one run per workdir. An ``flock`` on
  ``<workdir>/.lock`` held for the run's lifetime; the file names the holder
  (pid, host). The kernel drops the lock when the holder dies, however it
  dies, so a lock left by a killed run is taken over (with a note).
* :func:`prepare`: create the workdir or say in one line why it cannot be
  used (a regular file on the path, a read-only mount, an immutable or
  unwritable folder).
* :func:`atomic_write_text` / :func:`write_text_if_changed`: write a
  temporary file next to the target, fsync, rename: a reader (or a crash)
  sees the old file or the new one, never half of one.
* :func:`truncate_jsonl`: drop ``metrics.jsonl`` lines past the checkpoint a
  run resumes from, atomically.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import tempfile
from typing import Any, Callable

from dgmjax.errors import UserError

LOCK_NAME = ".lock"
PERF_NAME = "perf.json"


class WorkdirError(UserError, OSError):
  """The workdir cannot be created, written or locked."""


class WorkdirBusy(WorkdirError):
  """Another live process holds the workdir's lock."""


_KNOWN = ("No space left on device", "Disk quota exceeded", "Read-only file system",
          "Permission denied", "Operation not permitted", "File too large")


def reason(e: BaseException) -> str:
  """The operating system's reason in words ("No space left on device"), or "".

  Looks through the exception chain for an OSError, then for an OS error
  named inside another library's message (TensorStore writes
  ``[os_error_code='28']``).
  """
  seen = 0
  while e is not None and seen < 20:
    seen += 1
    if isinstance(e, OSError) and e.strerror:
      return e.strerror
    text = str(e)
    m = re.search(r"os_error_code='?(\d+)|\[OS error (\d+)", text)
    if m:
      return os.strerror(int(m.group(1) or m.group(2)))
    for known in _KNOWN:
      if known in text:
        return known
    e = e.__cause__ or e.__context__
  return ""


def free_space(path: str) -> str:
  """Free space on the filesystem holding ``path`` (or its nearest existing parent)."""
  p = os.path.abspath(path)
  while p and not os.path.exists(p):
    p = os.path.dirname(p)
  try:
    return human_bytes(shutil.disk_usage(p).free)
  except OSError:
    return "unknown"


def human_bytes(n: float) -> str:
  for unit in ("B", "KB", "MB", "GB", "TB"):
    if n < 1024 or unit == "TB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  return f"{n:.1f} TB"


# ----------------------------------------------------------------------------
# Creating and checking the workdir
# ----------------------------------------------------------------------------
def _file_on_path(path: str) -> str | None:
  """The first component of ``path`` that exists and is not a folder."""
  p = os.path.abspath(path)
  parts = []
  while True:
    parts.append(p)
    parent = os.path.dirname(p)
    if parent == p:
      break
    p = parent
  for q in reversed(parts):
    if os.path.exists(q) and not os.path.isdir(q):
      return q
    if not os.path.exists(q):
      return None
  return None


def _why(e: OSError) -> str:
  if e.errno == errno.EROFS:
    return "it is on a read-only filesystem"
  if e.errno in (errno.EACCES, errno.EPERM):
    return "permission denied (a read-only or immutable folder?)"
  if e.errno == errno.ENOSPC:
    return "no space left on the device"
  return e.strerror or str(e)


def probe_writable(folder: str) -> OSError | None:
  """None if a file can be created in ``folder``, else the OSError."""
  try:
    fd, name = tempfile.mkstemp(prefix=".probe-", dir=folder)
    os.close(fd)
    os.unlink(name)
  except OSError as e:
    return e
  return None


def prepare(workdir: str, *, read_only_ok: bool = False) -> bool:
  """Create ``workdir`` if needed; True if it (and its checkpoints) are writable.

  Raises one :class:`WorkdirError` line when it cannot be used. With
  ``read_only_ok`` (evaluation only) an existing read-only workdir returns
  False instead.
  """
  flag = f"--workdir={workdir}"
  blocker = _file_on_path(workdir)
  if blocker is not None:
    where = "is a file" if os.path.abspath(blocker) == os.path.abspath(workdir) else \
        f"cannot be created: {blocker} is a file"
    raise WorkdirError(f"{flag} {where}, not a folder; choose another --workdir.")
  existed = os.path.isdir(workdir)
  if not existed:
    try:
      os.makedirs(workdir, exist_ok=True)
    except OSError as e:
      raise WorkdirError(f"cannot create {flag}: {_why(e)}; choose another --workdir.") from None
  for folder in (workdir, os.path.join(workdir, "checkpoints")):
    if not os.path.isdir(folder):
      continue
    e = probe_writable(folder)
    if e is None:
      continue
    if read_only_ok and existed:
      return False
    what = "" if folder == workdir else f" (its folder {folder})"
    raise WorkdirError(
        f"cannot write to {flag}{what}: {_why(e)}. Training writes checkpoints and logs "
        "there: make it writable or choose another --workdir (--config.eval_only=True "
        "evaluates a finished workdir without writing).")
  return True


# ----------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------
def atomic_write_text(path: str, text: str) -> None:
  """Write ``path`` via a temporary file in the same folder and a rename."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except OSError:
      pass
    raise


def write_text_if_changed(path: str, text: str) -> bool:
  """Atomically write ``path`` unless it already holds ``text``; True if written."""
  try:
    with open(path) as f:
      if f.read() == text:
        return False
  except OSError:
    pass
  atomic_write_text(path, text)
  return True


def write_json(path: str, obj: Any) -> None:
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def truncate_jsonl(path: str, start_step: int) -> None:
  """Drop lines a killed run wrote after the checkpoint we resume from.

  Lines cut by SIGKILL are dropped too. The file is rewritten only when
  something is dropped, and then atomically.
  """
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [ln for ln in f if ln.strip()]
  keep = []
  for ln in lines:
    try:
      if json.loads(ln).get("step", 0) <= start_step:
        keep.append(ln if ln.endswith("\n") else ln + "\n")
    except json.JSONDecodeError:  # a line cut by SIGKILL
      pass
  if len(keep) == len(lines) and all(a == b for a, b in zip(keep, lines, strict=True)):
    return
  atomic_write_text(path, "".join(keep))


def append_line(path: str, line: str) -> None:
  """Append one line; a failed write is one :class:`WorkdirError` line."""
  try:
    with open(path, "a") as f:
      f.write(line + "\n")
  except OSError as e:
    raise WorkdirError(f"cannot write {path}: {_why(e)} ({free_space(path)} free); "
                       "training stopped. Rerun the same command to resume from the last "
                       "checkpoint.") from None


def previous_perf(workdir: str) -> dict:
  """The ``perf/*`` figures of the run that trained this workdir.

  From ``perf.json`` (written when training finishes), else from an older
  ``summary.json``.
  """
  for name in (PERF_NAME, "summary.json"):
    try:
      with open(os.path.join(workdir, name)) as f:
        out = {k: v for k, v in json.load(f).items() if k.startswith("perf/")}
    except (OSError, ValueError, AttributeError):
      continue
    if out:
      return out
  return {}


def save_perf(workdir: str, perf: dict) -> None:
  """Keep the speed figures of a finished training run next to its checkpoints."""
  if perf:
    write_json(os.path.join(workdir, PERF_NAME), perf)


# ----------------------------------------------------------------------------
# The lock
# ----------------------------------------------------------------------------
def _describe(holder: dict) -> str:
  return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"


class WorkdirLock:
  """An exclusive lock on a workdir for one run (process 0 of it).

  ``acquire`` raises :class:`WorkdirBusy` naming the holder's pid and host
  when a live process holds it. The lock is an ``flock``, which the kernel
  releases when its holder dies; a lock file still naming a holder is then
  stale and is taken over, with ``note`` told so.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_NAME)
    self._fd: int | None = None

  def acquire(self, note: Callable[[str], None] | None = None) -> "WorkdirLock":
    import fcntl

    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise WorkdirError(f"cannot lock --workdir={self.workdir}: cannot create {self.path}: "
                         f"{_why(e)}.") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = _read_holder(fd)
      os.close(fd)
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise WorkdirBusy(
            f"--workdir={self.workdir} is in use by another run ({_describe(holder)}); "
            "wait for it to finish, stop it, or choose another --workdir.") from None
      raise WorkdirError(f"cannot lock --workdir={self.workdir}: {_why(e)}.") from None
    stale = _read_holder(fd)
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    if stale and note is not None:
      same = stale.get("host") == me["host"]
      where = "" if same else " (another host; its lock was released)"
      note(f"note: took over the lock of a run that is no longer running "
           f"({_describe(stale)}){where}.")
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    os.fsync(fd)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is None:
      return
    import fcntl

    try:
      os.ftruncate(self._fd, 0)  # an empty file: released cleanly, nothing stale
    except OSError:
      pass
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def _read_holder(fd: int) -> dict:
  try:
    raw = os.pread(fd, 4096, 0)
    out = json.loads(raw.decode()) if raw.strip() else {}
    return out if isinstance(out, dict) else {}
  except (OSError, ValueError):
    return {}
