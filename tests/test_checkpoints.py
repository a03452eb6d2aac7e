"""Checkpoints: failed saves, damaged checkpoints, non-finite states, resume checks (issue 18).

Properties: the first failed save stops the run in one line naming the last
good checkpoint, which stays readable; a damaged latest checkpoint is moved
aside and the newest good one is used; a non-finite state is never saved and
the message names the checkpoint that really exists; a resume that would
change the data stream is refused before config.json is touched.
"""

import os
import shutil
import subprocess
import sys
import time
import uuid

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tests_support import tiny_vqvae_config

from dgmjax.errors import CheckpointError, ConfigError, NonFiniteError
from train import checkpoints, harness, vqvae

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _steps(workdir):
  return checkpoints.complete_steps(os.path.join(workdir, "checkpoints"))


def _params(workdir, step):
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(path)
  meta = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
  return ckptr.restore(path, restore_args=args)["params"]


def _logged_steps(workdir):
  import json

  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(ln)["step"] for ln in f]


def test_failed_background_save_stops_the_run_and_names_the_last_good_one(tmp_path, monkeypatch):
  """A stub of Orbax's background write failing for step 40, as a full disk does."""
  real_save, real_wait = ocp.CheckpointManager.save, ocp.CheckpointManager.wait_until_finished
  failing = {}

  def save(self, step, *a, **k):
    out = real_save(self, step, *a, **k)
    failing[id(self)] = step == 40
    return out

  def wait(self):
    real_wait(self)
    if failing.pop(id(self), False):  # a failed write is never renamed into place
      final = os.path.join(str(self.directory), "40")
      os.rename(final, final + ".orbax-checkpoint-tmp-123")
      raise ValueError("RESOURCE_EXHAUSTED: Error writing \"params.x/0\" in OCDBT database: "
                       "Failed to write 352670 bytes: No space left on device [os_error_code='28']")

  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", wait)

  def make_task(cfg, info):  # steps of ~0.1 s, like a real model's, not a tiny one's
    task = vqvae.make_task(cfg, info)

    def step(state, batch):
      jax.debug.callback(lambda: time.sleep(0.1))
      return task.train_step(state, batch)

    return harness.Task(**{**task.__dict__, "train_step": step})

  config = tiny_vqvae_config(num_steps=60, checkpoint_every=20, log_every=2)
  with pytest.raises(CheckpointError) as info:
    harness.train_and_evaluate(config, str(tmp_path), make_task)
  msg = str(info.value)
  assert "\n" not in msg and "step 40" in msg and "No space left on device" in msg
  assert "free there" in msg and "last good checkpoint is step 20" in msg
  assert "OCDBT" not in msg
  # It stopped at once (within a few steps), not at the next save or the end.
  assert max(_logged_steps(tmp_path)) < 60
  assert _steps(tmp_path) == [20]
  assert os.listdir(tmp_path / "checkpoints") == ["20"]  # the half-written step is gone
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(_params(tmp_path, 20)))


def _can_mount():
  if os.geteuid() != 0 or not shutil.which("mount"):
    return False
  probe = f"/tmp/dgmjax-mount-probe-{uuid.uuid4().hex[:8]}"
  os.makedirs(probe)
  try:
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe],
                        capture_output=True).returncode == 0
    if ok:
      subprocess.run(["umount", probe], check=True)
    return ok
  finally:
    os.rmdir(probe)


# The stubbed save failure above runs by default; the real full disk is slow (three runs).
@pytest.mark.slow
@pytest.mark.skipif(not _can_mount(), reason="needs root and tmpfs mounts")
def test_full_disk_real_tmpfs(tmp_path):
  # Size the filesystem from a real checkpoint: two fit (Orbax keeps 2), a third does not.
  harness.train_and_evaluate(tiny_vqvae_config(num_steps=10), str(tmp_path / "probe"),
                             vqvae.make_task)
  size = sum(os.path.getsize(os.path.join(r, n))
             for r, _, ns in os.walk(tmp_path / "probe" / "checkpoints" / "10") for n in ns)
  small = tmp_path / "small"
  small.mkdir()
  subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(2.5 * size) // 1024 + 200}k", "tmpfs",
                  str(small)], check=True)
  try:
    work = small / "wd"
    flags = [f"--config.{k}={v}" for k, v in
             {"num_steps": 100000, "checkpoint_every": 10, "log_every": 10, "data_limit": 256,
              "batch_size": 32, "num_codes": 16, "code_dim": 4, "channels": "(8,8)",
              "res_hidden": 8, "num_res_blocks": 1, "quiet": True}.items()]
    r = subprocess.run([sys.executable, "-m", "train.vqvae", f"--workdir={work}", *flags],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr[-3000:]
    assert "No space left on device" in lines[0] and "free there" in lines[0]
    last = _steps(work)[0]
    assert f"last good checkpoint is step {last}" in lines[0]
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(_params(work, last)))
  finally:
    subprocess.run(["umount", str(small)], check=False)


def _flip_bytes_in_largest_chunk(step_dir):
  files = [os.path.join(r, n) for r, _, ns in os.walk(os.path.join(step_dir, "state")) for n in ns]
  target = max(files, key=os.path.getsize)
  with open(target, "r+b") as f:
    data = bytearray(f.read())
    mid = len(data) // 2
    n = min(4096, len(data) - mid)
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    f.seek(0)
    f.write(data)
  return target


def test_damaged_latest_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path, capsys):
  config = tiny_vqvae_config(num_steps=20, checkpoint_every=10, keep_checkpoints=2)
  harness.train_and_evaluate(config, str(tmp_path), vqvae.make_task)
  assert _steps(tmp_path) == [20, 10]
  _flip_bytes_in_largest_chunk(tmp_path / "checkpoints" / "20")
  capsys.readouterr()
  harness.train_and_evaluate(tiny_vqvae_config(num_steps=30, checkpoint_every=10,
                                               keep_checkpoints=2), str(tmp_path), vqvae.make_task)
  err = capsys.readouterr().err
  warn = [ln for ln in err.splitlines() if ln.startswith("warning:")]
  assert len(warn) == 1 and "step 20" in warn[0] and "checksum" in warn[0], err
  assert "resuming from step 10" in warn[0]
  # Kept aside, not deleted; the run went on from 10 and wrote fresh 20 and 30.
  assert (tmp_path / "checkpoints.damaged" / "20" / "state").is_dir()
  assert _steps(tmp_path) == [30, 20]
  assert _logged_steps(tmp_path)[-1] == 30


def test_missing_metadata_is_reported_in_plain_words(tmp_path):
  config = tiny_vqvae_config(num_steps=10, checkpoint_every=10, keep_checkpoints=1)
  harness.train_and_evaluate(config, str(tmp_path), vqvae.make_task)
  os.remove(tmp_path / "checkpoints" / "10" / "state" / "_METADATA")
  with pytest.raises(CheckpointError) as info:
    harness.train_and_evaluate(tiny_vqvae_config(num_steps=20), str(tmp_path), vqvae.make_task)
  msg = str(info.value)
  assert "state/_METADATA is missing" in msg and "\n" not in msg
  assert "pytree" not in msg.lower() and "pybind11" not in msg and "bound method" not in msg
  # Nothing was moved or deleted when there is nothing to fall back to.
  assert _steps(tmp_path) == [10] and not (tmp_path / "checkpoints.damaged").exists()


def _poisoned(poison_params_at=None, poison_loss_at=None):
  def make_task(cfg, info):
    task = vqvae.make_task(cfg, info)

    def step(state, batch):
      new, metrics = task.train_step(state, batch)
      if poison_params_at is not None:  # the state goes bad, its metrics stay finite
        bad = state.step == poison_params_at - 1
        new = new.replace(params=jax.tree.map(lambda p: jnp.where(bad, jnp.nan, p), new.params))
      if poison_loss_at is not None:
        bad = state.step == poison_loss_at - 1
        metrics["train/loss"] = jnp.where(bad, jnp.inf, metrics["train/loss"])
      return new, metrics

    return harness.Task(**{**task.__dict__, "train_step": step})

  return make_task


def test_non_finite_state_is_never_saved(tmp_path):
  config = tiny_vqvae_config(num_steps=30, checkpoint_every=5, log_every=100)
  with pytest.raises(NonFiniteError) as info:
    harness.train_and_evaluate(config, str(tmp_path), _poisoned(poison_params_at=15))
  msg = str(info.value)
  assert "step 15" in msg and "not finite" in msg and "last good checkpoint is step 10" in msg
  assert _steps(tmp_path) == [10, 5]
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(_params(tmp_path, 10)))


def test_nan_message_says_when_there_is_no_checkpoint(tmp_path):
  config = tiny_vqvae_config(num_steps=30, checkpoint_every=10, log_every=2)
  with pytest.raises(NonFiniteError) as info:
    harness.train_and_evaluate(config, str(tmp_path), _poisoned(poison_loss_at=3))
  msg = str(info.value)
  assert "at step 3" in msg and "no checkpoint has been written yet" in msg
  assert "intact" not in msg and _steps(tmp_path) == []


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), -1.0])
def test_non_finite_learning_rate_is_rejected(tmp_path, lr):
  with pytest.raises(ConfigError, match="learning_rate"):
    harness.train_and_evaluate(tiny_vqvae_config(learning_rate=lr), str(tmp_path), vqvae.make_task)
  assert _steps(tmp_path) == []


def test_resume_with_another_batch_size_is_refused_and_config_json_kept(tmp_path):
  harness.train_and_evaluate(tiny_vqvae_config(num_steps=10), str(tmp_path), vqvae.make_task)
  before = (tmp_path / "config.json").read_bytes()
  for bs in (64, 16):
    with pytest.raises(CheckpointError, match=f"batch_size {bs}: it was trained with batch_size 32"):
      harness.train_and_evaluate(tiny_vqvae_config(num_steps=20, batch_size=bs), str(tmp_path),
                                 vqvae.make_task)
  assert (tmp_path / "config.json").read_bytes() == before
  assert _steps(tmp_path) == [10]


@pytest.mark.parametrize("over,key", [
    ({"batch_size": 100000}, "batch_size"),
    ({"data_limit": 5}, "data_limit"),
    ({"seed": -1}, "seed"),
])
def test_bad_values_are_one_config_error(tmp_path, over, key):
  with pytest.raises(ConfigError, match=key) as info:
    harness.train_and_evaluate(tiny_vqvae_config(**over), str(tmp_path), vqvae.make_task)
  assert "\n" not in str(info.value)


def test_classifier_cache_is_verified_by_checksum(tmp_path, capsys, monkeypatch):
  from dgmjax.data import load_digits
  from dgmjax.metrics import classifier as clf

  xtr, ytr = load_digits("train")[:2]
  xte, yte = load_digits("test")[:2]
  xtr, ytr, xte, yte = xtr[:300] / 255.0, ytr[:300], xte[:100] / 255.0, yte[:100]
  monkeypatch.setenv("DGMJAX_CACHE", str(tmp_path))  # the location is overridable
  first = clf.load_or_train_classifier(xtr, ytr, xte, yte, steps=5)
  (cached,) = [p for p in os.listdir(tmp_path) if p.endswith(".msgpack")]
  path = tmp_path / cached
  data = bytearray(path.read_bytes())
  mid = len(data) // 2  # inside the float payload: msgpack still parses, the weights are wrong
  data[mid:mid + 64] = bytes(b ^ 0x5A for b in data[mid:mid + 64])
  path.write_bytes(bytes(data))
  capsys.readouterr()
  again = clf.load_or_train_classifier(xtr, ytr, xte, yte, steps=5)
  err = capsys.readouterr().err
  assert err.startswith("warning:") and "checksum" in err and err.count("\n") == 1
  assert (tmp_path / (cached + ".damaged")).exists()
  for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(again.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # retrained, not the damaged weights
  path.write_bytes(path.read_bytes()[:100])  # truncated
  clf.load_or_train_classifier(xtr, ytr, xte, yte, steps=5)
  assert "unusable" in capsys.readouterr().err
