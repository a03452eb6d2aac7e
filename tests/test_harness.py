"""The shared training harness, exercised through the VQ-VAE trainer.

Properties: data-parallel sharded step == single-device step; kill -9 and resume == uninterrupted; SIGTERM saves; the NaN
guard names the step and leaves the last checkpoint readable; bad configs fail
with one clear line; two processes == one process.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tests_support
from tests_support import TINY_VQVAE, steps_two_ways, tiny_vqvae_config

from dgmjax.errors import CheckpointError, ConfigError, NonFiniteError
from train import harness, vqvae

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = TINY_VQVAE
tiny_config = tiny_vqvae_config


def _flags(**over):
  out = []
  for k, v in {**TINY, **over}.items():
    out.append(f"--config.{k}={v!r}" if isinstance(v, tuple) else f"--config.{k}={v}")
  return out


def _run(workdir, *flags, env=None, wait=True):
  cmd = [sys.executable, "-m", "train.vqvae", f"--workdir={workdir}", *flags]
  e = dict(os.environ)
  e.update(env or {})
  if wait:
    return subprocess.run(cmd, cwd=REPO, env=e, capture_output=True, text=True, timeout=300)
  return subprocess.Popen(cmd, cwd=REPO, env=e, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _restore_params(workdir):
  import orbax.checkpoint as ocp

  ckdir = os.path.join(workdir, "checkpoints")
  step = max(int(d) for d in os.listdir(ckdir) if d.isdigit())
  path = os.path.join(ckdir, str(step), "state")
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(path)
  meta = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta
  # As host arrays: the writer may have had another device layout than we do.
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
  return step, ckptr.restore(path, restore_args=args)


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(ln) for ln in f]
  return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def _task_and_batches(config, n_steps):
  train, test, info = harness.load_data(config)
  task = vqvae.make_task(config, info)
  from dgmjax.data import BatchLoader

  loader = BatchLoader(train, batch_size=config.batch_size, seed=0,
                       transform=harness.image_transform(config.pixel_format))
  batches = [loader.next_numpy() for _ in range(n_steps)]
  example = {k: v[:8] for k, v in batches[0].items()}
  return task, batches, example


def _assert_trees_close(a, b, rtol=2e-5, atol=2e-6):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb, strict=True):
    if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize("codebook", ["ema", "loss"])
def test_sharded_step_equals_single_device(codebook):
  config = tiny_config(codebook=codebook)
  # Two steps: reductions in a different order differ in the last bits, and
  # Adam turns sign flips of near-zero gradients into lr-sized steps, so
  # longer runs drift apart by float noise alone. A missing cross-device
  # reduction shows up at once as differences of order lr (2e-3).
  task, batches, example = _task_and_batches(config, 2)
  s0, (s1, m1), (s8, m8) = steps_two_ways(task, batches, example)
  tol = dict(rtol=1e-4, atol=1e-5)
  _assert_trees_close(s1.params, s8.params, **tol)
  _assert_trees_close(s1.extra, s8.extra)
  for k in m1:  # metrics are global: perplexity from the global histogram
    np.testing.assert_allclose(float(m1[k]), float(m8[k]), rtol=1e-4)
  # The step did something: parameters moved by about lr.
  moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
              for a, b in zip(jax.tree.leaves(s0.params), jax.tree.leaves(s1.params), strict=True))
  assert moved > 1e-3


def test_kill_and_resume_equals_uninterrupted(tmp_path):
  # Two of the 8 devices: the killed run restores a sharded checkpoint.
  flags = _flags(num_steps=200, checkpoint_every=20, log_every=20, num_devices=2)
  ref = _run(tmp_path / "ref", *flags)
  assert ref.returncode == 0, ref.stderr[-2000:]

  work = tmp_path / "killed"
  proc = _run(work, *flags, wait=False)
  ck = work / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline:
    done = [int(d) for d in os.listdir(ck) if d.isdigit()] if ck.exists() else []
    if any(20 <= d < 200 for d in done):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  steps = [int(d) for d in os.listdir(ck) if d.isdigit()]
  assert steps and max(steps) < 200, f"run finished before the kill: {steps}"

  resumed = _run(work, *flags)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resuming from step" in resumed.stdout + resumed.stderr
  step_a, a = _restore_params(tmp_path / "ref")
  step_b, b = _restore_params(work)
  assert step_a == step_b == 200
  _assert_trees_close(a, b, rtol=0, atol=0)  # bitwise
  assert _metrics(tmp_path / "ref") == _metrics(work)
  sa = json.loads((tmp_path / "ref" / "summary.json").read_text())
  sb = json.loads((work / "summary.json").read_text())
  assert sa["test/mse"] == sb["test/mse"]

  # Rerunning a finished run does not train again.
  again = _run(work, *flags)
  assert again.returncode == 0 and "first step" not in again.stdout + again.stderr


def test_sigterm_saves_a_checkpoint_then_resume_finishes(tmp_path):
  flags = _flags(num_steps=100000, checkpoint_every=100000, log_every=10)
  work = tmp_path / "w"
  proc = _run(work, *flags, wait=False)
  deadline = time.time() + 240
  while time.time() < deadline and not (work / "metrics.jsonl").exists():
    time.sleep(0.05)
  time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
  assert "checkpoint saved" in out
  steps = [int(d) for d in os.listdir(work / "checkpoints") if d.isdigit()]
  assert len(steps) == 1 and 0 < steps[0] < 100000
  # A resumed run starts exactly there.
  res = _run(work, *_flags(num_steps=steps[0] + 5, checkpoint_every=100000, log_every=5))
  assert res.returncode == 0, res.stderr[-2000:]
  assert f"resuming from step {steps[0]}" in res.stdout + res.stderr


def test_nan_guard_names_the_step_and_keeps_last_checkpoint(tmp_path):
  config = tiny_config(num_steps=30, checkpoint_every=5, log_every=5)

  def make_task(cfg, info):
    task = vqvae.make_task(cfg, info)

    def poisoned(state, batch):
      new, metrics = task.train_step(state, batch)
      bad = state.step == 12  # the 13th update, reported as step 13
      metrics["train/loss"] = jax.numpy.where(bad, jax.numpy.nan, metrics["train/loss"])
      return new, metrics

    return harness.Task(**{**task.__dict__, "train_step": poisoned})

  with pytest.raises(NonFiniteError, match=r"train/loss became nan at step 13"):
    harness.train_and_evaluate(config, str(tmp_path), make_task)
  steps = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert steps[-1] == 10  # 15 was never written: its metrics were not finite
  step, tree = _restore_params(tmp_path)
  assert step == 10 and all(np.all(np.isfinite(x)) for x in jax.tree.leaves(tree["params"]))


def test_bad_config_errors_are_one_clear_line(tmp_path):
  for flag, expect in [
      ("--config.batch_sise=3", "batch_sise"),
      ("--config.batch_size=abc", "batch_size"),
  ]:
    r = _run(tmp_path / "x", flag)
    assert r.returncode != 0
    assert expect in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]
  r = _run(tmp_path / "y", "--config.dataset=tfds:not_a_dataset_xyz",
           env={"TFDS_DATA_DIR": str(tmp_path / "tfds")})
  assert r.returncode == 1 and "error:" in r.stderr and "Traceback" not in r.stderr
  assert "digits" in r.stderr
  with pytest.raises(ConfigError, match="batch_size must be divisible by the device count 8"):
    harness.train_and_evaluate(tiny_config(batch_size=12, num_devices=0), str(tmp_path / "z"),
                               vqvae.make_task)
  with pytest.raises(ConfigError, match="batch_size must be divisible by the device count 8"):
    harness.train_and_evaluate(tiny_config(batch_size=12, num_devices=8), str(tmp_path / "z"),
                               vqvae.make_task)
  for bad in (9, -1, True):
    with pytest.raises(ConfigError, match=r"config\.num_devices must be 0 \(every device\) or an "
                                          r"int from 1 to the device count 8, got"):
      harness.train_and_evaluate(tiny_config(num_devices=bad), str(tmp_path / "z"),
                                 vqvae.make_task)
  with pytest.raises(ConfigError, match="dataset"):
    harness.train_and_evaluate(tiny_config(dataset="mnist"), str(tmp_path / "z"), vqvae.make_task)
  with pytest.raises(ConfigError, match="codebook"):
    harness.train_and_evaluate(tiny_config(codebook="kmeans"), str(tmp_path / "z"), vqvae.make_task)


def test_eval_only_and_unreadable_checkpoint(tmp_path):
  with pytest.raises(CheckpointError, match="no checkpoint"):
    harness.train_and_evaluate(tiny_config(eval_only=True), str(tmp_path), vqvae.make_task)
  summary = harness.train_and_evaluate(tiny_config(num_steps=10), str(tmp_path), vqvae.make_task)
  again = harness.train_and_evaluate(tiny_config(num_steps=10, eval_only=True), str(tmp_path),
                                     vqvae.make_task)
  assert again["test/mse"] == summary["test/mse"]
  # The one-device run's checkpoint evaluated on all 8 devices: the same figure.
  eight = harness.train_and_evaluate(tiny_config(num_steps=10, eval_only=True, num_devices=0),
                                     str(tmp_path), vqvae.make_task)
  assert (summary["devices"], eight["devices"]) == (1, 8)
  np.testing.assert_allclose(eight["test/mse"], summary["test/mse"], rtol=1e-5)
  # Resuming with another seed would silently change the data order.
  with pytest.raises(CheckpointError, match="seed 7"):
    harness.train_and_evaluate(tiny_config(num_steps=20, seed=7), str(tmp_path), vqvae.make_task)
  # A checkpoint of a different model is reported, not a 40-line trace.
  with pytest.raises(CheckpointError, match="new --workdir"):
    harness.train_and_evaluate(tiny_config(num_steps=20, code_dim=6), str(tmp_path),
                               vqvae.make_task)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
  flags = _flags(num_steps=6, checkpoint_every=6, log_every=3, num_devices=0)
  one = _run(tmp_path / "one", *flags, env={"JAX_NUM_CPU_DEVICES": "2",
                                            "XLA_FLAGS": tests_support.xla_flags(2)})
  assert one.returncode == 0, one.stderr[-2000:]
  port = _free_port()
  env = {"JAX_NUM_CPU_DEVICES": "1", "XLA_FLAGS": tests_support.xla_flags(1)}
  procs = [
      _run(tmp_path / "two", *flags, "--config.distributed=True",
           f"--config.coordinator_address=127.0.0.1:{port}", "--config.num_processes=2",
           f"--config.process_id={i}", env=env, wait=False)
      for i in range(2)
  ]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outs[0][-2000:] + outs[1][-2000:]
  _, a = _restore_params(tmp_path / "one")
  _, b = _restore_params(tmp_path / "two")
  _assert_trees_close(a["params"], b["params"], rtol=1e-5, atol=1e-6)
  _assert_trees_close(a["extra"], b["extra"], rtol=1e-5, atol=1e-6)
  sa = json.loads((tmp_path / "one" / "summary.json").read_text())
  sb = json.loads((tmp_path / "two" / "summary.json").read_text())
  assert sb["devices"] == 2
  np.testing.assert_allclose(sa["test/mse"], sb["test/mse"], rtol=1e-5)
  # The 2-process checkpoint restores on this process's 8 devices.
  sc = harness.train_and_evaluate(tiny_config(num_steps=6, eval_only=True, num_devices=0),
                                  str(tmp_path / "two"), vqvae.make_task)
  np.testing.assert_allclose(sc["test/mse"], sb["test/mse"], rtol=1e-5)


def test_evaluation_binarization_is_fixed_per_split_and_unbiased():
  from dgmjax.data import load_digits

  images = load_digits("test")[0][:200]
  a = harness.formatted({"image": images}, "binary_dynamic")["image"]
  # The same images in every run, whatever config.seed: nothing random is passed in.
  np.testing.assert_array_equal(a, harness.formatted({"image": images}, "binary_dynamic")["image"])
  assert set(np.unique(a)) <= {0.0, 1.0}
  # A Bernoulli draw with p = intensity: its mean is within 4 standard errors of E[p].
  p = images.astype(np.float64) / 255.0
  se = np.sqrt(np.sum(p * (1 - p))) / p.size
  assert abs(float(a.mean()) - p.mean()) < 4 * se
  # The train split gets its own draw.
  b = harness.formatted({"image": images}, "binary_dynamic", "train")["image"]
  assert np.mean(a != b) > 0.001
