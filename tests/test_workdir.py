"""The workdir (issue 18): one run at a time, atomic files, unusable folders in one line.

Properties: a second run on a locked workdir exits at once naming the
holder's pid and host; a dead holder's lock is taken over with a note;
metrics.jsonl is never left half-written; a workdir under a file or on a
read-only mount is one line; eval_only works on a read-only workdir and
leaves an unchanged config.json alone; the speed figures survive a run
killed during its final evaluation.
"""

import builtins
import json
import os
import signal
import socket
import subprocess
import sys
import uuid

import pytest
from tests_support import tiny_vqvae_config

from dgmjax.errors import UserError
from train import harness, vqvae
from train import workdir as wd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HOLD = ("import sys, time\nfrom train.workdir import WorkdirLock\n"
        "WorkdirLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(120)\n")


def _holder(path):
  p = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=REPO, stdout=subprocess.PIPE,
                       text=True)
  assert p.stdout.readline().strip() == "locked"
  return p


def test_second_run_on_a_locked_workdir_exits_at_once_naming_the_holder(tmp_path):
  holder = _holder(tmp_path)
  try:
    r = subprocess.run([sys.executable, "-m", "train.vqvae", f"--workdir={tmp_path}",
                        "--config.num_steps=5", "--config.quiet=True", "--config.data_limit=64",
                        "--config.batch_size=32"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr[-2000:]
    assert f"pid {holder.pid}" in lines[0] and socket.gethostname() in lines[0]
    # It wrote nothing: no metrics, no checkpoint, no config.json.
    assert sorted(os.listdir(tmp_path)) == [wd.LOCK_NAME]
  finally:
    holder.kill()
    holder.wait()


def test_a_dead_holders_lock_is_taken_over_with_a_note(tmp_path):
  holder = _holder(tmp_path)
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  notes = []
  lock = wd.WorkdirLock(str(tmp_path)).acquire(note=notes.append)
  try:
    assert len(notes) == 1 and f"pid {holder.pid}" in notes[0] and "no longer running" in notes[0]
    # While we hold it, another taker is refused with our pid.
    with pytest.raises(wd.WorkdirBusy, match=f"pid {os.getpid()}"):
      wd.WorkdirLock(str(tmp_path)).acquire()
  finally:
    lock.release()
  # A clean release leaves nothing stale behind.
  notes.clear()
  wd.WorkdirLock(str(tmp_path)).acquire(note=notes.append).release()
  assert notes == []


def test_metrics_rewrite_on_resume_is_atomic(tmp_path, monkeypatch):
  path = tmp_path / "metrics.jsonl"
  rows = "".join(json.dumps({"step": s, "x": 1.0}) + "\n" for s in (10, 20, 30))
  path.write_text(rows + '{"step": 4')  # a line cut by SIGKILL
  real_open = builtins.open

  class Full:
    """A file on a full disk: opening works, writing fails."""

    def __init__(self, f):
      self._f = f

    def write(self, *_):
      raise OSError(28, "No space left on device")

    writelines = write

    def __getattr__(self, k):
      return getattr(self._f, k)

    def __enter__(self):
      return self

    def __exit__(self, *a):
      self._f.close()

  def full_open(file, mode="r", *a, **k):
    f = real_open(file, mode, *a, **k)
    return Full(f) if "w" in mode else f

  monkeypatch.setattr(builtins, "open", full_open)
  monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: Full(real_open(fd, mode, *a, **k)))
  with pytest.raises(OSError):
    wd.truncate_jsonl(str(path), 20)
  monkeypatch.undo()
  assert path.read_text() == rows + '{"step": 4'  # the old file, whole
  assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]  # no temporary left behind
  wd.truncate_jsonl(str(path), 20)
  assert [json.loads(ln)["step"] for ln in path.read_text().splitlines()] == [10, 20]


def test_workdir_under_a_file_is_one_line(tmp_path):
  (tmp_path / "f").write_text("x")
  for work in (tmp_path / "f" / "wd", tmp_path / "f"):
    with pytest.raises(UserError) as info:
      harness.train_and_evaluate(tiny_vqvae_config(), str(work), vqvae.make_task)
    assert "is a file" in str(info.value) and "\n" not in str(info.value)


def _mount(*args):
  return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _can_mount():
  if os.geteuid() != 0:
    return False
  probe = f"/tmp/dgmjax-ro-probe-{uuid.uuid4().hex[:8]}"
  os.makedirs(probe)
  try:
    ok = _mount("--bind", probe, probe)
    if ok:
      subprocess.run(["umount", probe], check=True)
    return ok
  finally:
    os.rmdir(probe)


@pytest.mark.skipif(not _can_mount(), reason="needs root and bind mounts")
def test_read_only_workdir(tmp_path, capsys):
  work = tmp_path / "w"
  first = harness.train_and_evaluate(tiny_vqvae_config(num_steps=10), str(work), vqvae.make_task)
  ro = tmp_path / "ro"
  ro.mkdir()
  assert _mount("--bind", str(work), str(ro))
  try:
    assert _mount("-o", "remount,ro,bind", str(ro))
    # Training there is one line.
    with pytest.raises(UserError, match="read-only filesystem") as info:
      harness.train_and_evaluate(tiny_vqvae_config(num_steps=20), str(ro), vqvae.make_task)
    assert "\n" not in str(info.value)
    # Evaluating works, says why summary.json is not written.
    capsys.readouterr()
    again = harness.train_and_evaluate(tiny_vqvae_config(num_steps=10, eval_only=True,
                                                         quiet=False), str(ro), vqvae.make_task)
    assert again["test/mse"] == first["test/mse"]
    assert "read-only; summary.json was not written" in capsys.readouterr().out
  finally:
    subprocess.run(["umount", str(ro)], check=False)


def test_eval_only_leaves_an_unchanged_config_json_alone(tmp_path):
  harness.train_and_evaluate(tiny_vqvae_config(num_steps=10), str(tmp_path), vqvae.make_task)
  before = os.stat(tmp_path / "config.json")
  harness.train_and_evaluate(tiny_vqvae_config(num_steps=10), str(tmp_path), vqvae.make_task)
  after = os.stat(tmp_path / "config.json")
  assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_perf_figures_survive_a_kill_during_the_final_evaluation(tmp_path):
  first = harness.train_and_evaluate(tiny_vqvae_config(num_steps=10), str(tmp_path),
                                     vqvae.make_task)
  assert first["perf/steps_per_sec"] > 0
  os.remove(tmp_path / "summary.json")  # killed before the summary was written
  again = harness.train_and_evaluate(tiny_vqvae_config(num_steps=10), str(tmp_path),
                                     vqvae.make_task)
  perf = {k: v for k, v in first.items() if k.startswith("perf/")}
  assert perf and {k: again[k] for k in perf} == perf
