"""dgmjax.eval.runs: a finished trainer run read back without the trainers.

The reader must give exactly the arrays the harness's own restore gives (bitwise,
for a one-player and a two-player trainer), put NamedTuple state (the VQ-VAE's
EMA codebook) back into its type with ``conform``, fall back to an older
checkpoint when the newest cannot be read, and fail with one clear error for a
folder that is not a run.
"""

import os
import shutil

import jax
import numpy as np
import pytest
from tests_support import tiny_vqvae_config

from dgmjax.eval import runs
from train import gan, harness, vqvae

# Module-scoped fixtures: the whole file runs on one xdist worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("runs")


def _leaves(tree):
  out = []
  for x in jax.tree.leaves(tree):
    if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    out.append(np.asarray(x))
  return out


@pytest.fixture(scope="module")
def tiny_gan(tmp_path_factory):
  """One finished 6-step ring GAN run with checkpoints at steps 3 and 6."""
  c = gan.get_config()
  c.update(dict(num_steps=6, log_every=3, checkpoint_every=3, batch_size=16, eval_batch_size=64,
                g_features=(8,), d_features=(8,), quiet=True, keep_checkpoints=3))
  workdir = str(tmp_path_factory.mktemp("runs") / "gan")
  gan.train_and_evaluate(c, workdir)
  train, test, info = gan.load(c)
  example = {k: v[: c.batch_size] for k, v in test.items()}
  return c, workdir, gan.make_task(c, info), example


def test_two_player_run_matches_the_harness_restore_bitwise(tiny_gan):
  c, workdir, task, example = tiny_gan
  run = runs.load_run(workdir)
  ref, step = harness.restore_state(workdir, task, c, example)
  assert run.step == step == 6
  assert run.summary["step"] == 6 and run.config["g_features"] == (8,)
  for player in ("gen", "disc"):
    a, b = _leaves(run.state[player]["params"]), _leaves(ref[player].params)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
      assert isinstance(x, np.ndarray)
      np.testing.assert_array_equal(x, y)
    assert int(run.state[player]["step"]) == int(ref[player].step)
  np.testing.assert_array_equal(jax.random.key_data(run.state["gen"]["rng"]),
                                jax.random.key_data(ref["gen"].rng))


def test_unreadable_newest_checkpoint_falls_back_to_the_older_one(tiny_gan, tmp_path, capsys):
  workdir = str(tmp_path / "copy")
  shutil.copytree(tiny_gan[1], workdir)
  state_dir = os.path.join(workdir, "checkpoints", "6", "state")
  for name in os.listdir(state_dir):  # the array data and metadata of step 6 are gone
    p = os.path.join(state_dir, name)
    shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
  run = runs.load_run(workdir)
  assert run.step == 3
  assert "step 6" in capsys.readouterr().err
  shutil.rmtree(os.path.join(workdir, "checkpoints", "3", "state"))
  os.makedirs(os.path.join(workdir, "checkpoints", "3", "state"))
  with pytest.raises(ValueError, match="no checkpoint of"):
    runs.load_run(workdir)


def test_conform_puts_the_vqvae_ema_state_back_in_its_types(tmp_path):
  c = tiny_vqvae_config(num_steps=4, checkpoint_every=4, log_every=2)
  workdir = str(tmp_path / "vq")
  vqvae.train_and_evaluate(c, workdir)
  run = runs.load_run(workdir)
  train, test, info = harness.load_data(c)
  example = harness.formatted({"image": test["image"][:8]}, c.pixel_format)
  ref, _ = harness.restore_state(workdir, vqvae.make_task(c, info), c, example)
  template = jax.eval_shape(lambda: ref.extra)
  # Restored without a target, the EMA state's NamedTuple came back as a dict.
  assert jax.tree.structure(run.state["extra"]) != jax.tree.structure(ref.extra)
  out = runs.conform(run.state["extra"], template)
  assert jax.tree.structure(out) == jax.tree.structure(ref.extra)
  for x, y in zip(_leaves(out), _leaves(ref.extra), strict=True):
    np.testing.assert_array_equal(x, y)


def test_conform_names_a_missing_path_and_a_wrong_shape():
  with pytest.raises(ValueError, match="no .*b"):
    runs.conform({"a": np.zeros(2)}, {"a": np.zeros(2), "b": np.zeros(1)})
  with pytest.raises(ValueError, match=r"\['a'\] has shape \(3,\)"):
    runs.conform({"a": np.zeros(3)}, {"a": np.zeros(2)})


def test_not_a_run_is_one_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json"):
    runs.load_run(str(tmp_path))
  (tmp_path / "config.json").write_text('{"hidden": [1, 2]}')
  assert runs.read_config(str(tmp_path)) == {"hidden": (1, 2)}
  assert runs.read_summary(str(tmp_path)) is None
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    runs.load_run(str(tmp_path))
