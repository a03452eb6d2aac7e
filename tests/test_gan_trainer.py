"""The GAN trainer (train/gan.py) end to end and its two-player step.

Properties: a short ring run learns (its samples' law approaches the ring's)
and writes its figures and pictures; the evaluation's high-quality fraction
equals the report's mode-coverage figure (same latents); resuming both
players from a checkpoint equals the uninterrupted run bitwise; the
data-sharded step equals the single-device step; simultaneous updates differ from
alternating ones only in which discriminator the generator sees; bad configs
fail naming the key.
"""

import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests_support import steps_two_ways

from dgmjax.data import BatchLoader, toy
from dgmjax.errors import ConfigError
from dgmjax.metrics import mode_coverage as mc
from dgmjax.nn.gan import pack
from train import gan, harness
from train.state import step_key

TINY = {
    "num_steps": 20, "log_every": 5, "checkpoint_every": 10, "batch_size": 32,
    "eval_batch_size": 64, "g_features": (16, 16), "d_features": (16, 16),
    "image_every": 10, "quiet": True, "num_devices": 1,
}
TINY_DIGITS = {
    "dataset": "digits", "data_limit": 256, "base_channels": 4, "latent_dim": 8,
    "num_images": 16, "classifier_steps": 20, "num_eval_samples": 100,
}


def tiny_config(**over):
  c = gan.get_config()
  c.update({**TINY, **over})
  return c


def _leaves(tree):
  out = []
  for x in jax.tree.leaves(tree):
    if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    out.append(np.asarray(x))
  return out


def _assert_trees_close(a, b, **tol):
  la, lb = _leaves(a), _leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb, strict=True):
    np.testing.assert_allclose(x, y, **tol)


def _task_state_and_example(config):
  train, test, info = gan.load(config)
  task = gan.make_task(config, info)
  if not gan.is_toy(config):
    test = harness.formatted(test, "symmetric")
  example = {k: v[: config.batch_size] for k, v in test.items()}
  return task, train, test, info, example


def _energy_distance(x, y):
  """2E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖ >= 0, zero iff the laws are equal."""
  d = lambda a, b: jnp.mean(jnp.linalg.norm(a[:, None] - b[None], axis=-1))
  return float(2 * d(x, y) - d(x, x) - d(y, y))


def test_ring_run_learns_writes_figures_and_resumes_exactly(tmp_path):
  # A constant learning rate: 300 steps of a cosine decay leave too little time.
  config = tiny_config(num_steps=300, log_every=50, image_every=100, checkpoint_every=100,
                       keep_checkpoints=3, batch_size=64, lr_schedule="constant",
                       g_features=(32, 32), d_features=(32, 32), n_critic=2)
  summary = gan.train_and_evaluate(config, str(tmp_path))
  for key in ("test/d_loss", "test/jsd", "test/high_quality", "high_quality_fraction",
              "mode_kl"):
    assert np.isfinite(summary[key]), key
  assert summary["num_modes"] == 8 and 0 <= summary["modes_covered"] <= 8
  assert sum(summary["mode_counts"]) == round(summary["high_quality_fraction"] * mc.NUM_SAMPLES)
  # Both use the same 2500 fixed latents; the evaluator's padding is masked out.
  np.testing.assert_allclose(summary["test/high_quality"], summary["high_quality_fraction"],
                             atol=1e-6)
  np.testing.assert_allclose(summary["test/jsd"], (math.log(4) - summary["test/d_loss"]) / 2,
                             rtol=1e-5, atol=1e-6)
  images = set(os.listdir(tmp_path / "images"))
  assert {"samples_0000100.png", "samples_0000300.png", "samples.gif", "curves.png"} <= images
  ref_rows = open(tmp_path / "metrics.jsonl").read()
  rows = [json.loads(ln) for ln in ref_rows.splitlines()]
  assert [r["step"] for r in rows] == [50, 100, 150, 200, 250, 300]
  for r in rows:  # the logged JSD estimate is (log 4 − D loss)/2
    np.testing.assert_allclose(r["train/jsd"], (math.log(4) - r["train/d_loss"]) / 2, atol=1e-5)

  # The generator learned: its samples are much closer in law to the ring's
  # (energy distance ~0.45 at initialisation, ~0.05-0.15 after 300 steps).
  task, _, test, _, example = _task_state_and_example(config)
  ref, step = harness.restore_state(str(tmp_path), task, config, example)
  assert step == 300
  assert int(ref["gen"].step) == 300 and int(ref["disc"].step) == 600  # n_critic = 2
  init = task.init(jax.random.key(config.seed), example)
  g, _ = gan.build_models(config, None)
  z, real = jnp.asarray(test["z"][:1000]), jnp.asarray(test["x"][:1000])
  before = _energy_distance(g.apply(init["gen"].params, z), real)
  after = _energy_distance(g.apply(ref["gen"].params, z), real)
  assert after < 0.5 * before, (before, after)

  # "Kill" the run after step 200: its step-300 checkpoint never existed.
  shutil.rmtree(tmp_path / "checkpoints" / "300")
  again_summary = gan.train_and_evaluate(config, str(tmp_path))
  again, _ = harness.restore_state(str(tmp_path), task, config, example)
  _assert_trees_close(ref, again, rtol=0, atol=0)  # bitwise: both players, optimizers, keys

  def no_perf(text):
    return [{k: v for k, v in json.loads(ln).items() if not k.startswith("perf/")}
            for ln in text.splitlines()]

  assert no_perf(ref_rows) == no_perf(open(tmp_path / "metrics.jsonl").read())
  assert again_summary["high_quality_fraction"] == summary["high_quality_fraction"]


@pytest.mark.parametrize("over", [
    {"n_critic": 2, "pack": 2, "generator_loss": "minimax"},
    {**TINY_DIGITS, "pack": 2, "simultaneous": True, "real_label": 0.9},
], ids=["ring-ncritic2-pack2-minimax", "digits-pack2-simultaneous"])
def test_sharded_step_equals_single_device(over):
  config = tiny_config(**over)
  task, train, _, _, example = _task_state_and_example(config)
  transform = None if gan.is_toy(config) else harness.image_transform("symmetric")
  loader = BatchLoader(train, batch_size=config.batch_size, seed=0, transform=transform)
  batches = [loader.next_numpy() for _ in range(2)]
  s0, (s1, m1), (s8, m8) = steps_two_ways(task, batches, example)
  tol = dict(rtol=1e-4, atol=1e-5)
  for player in ("gen", "disc"):
    _assert_trees_close(s1[player].params, s8[player].params, **tol)
  for k in m1:  # global means, not per-device ones
    np.testing.assert_allclose(float(m1[k]), float(m8[k]), rtol=1e-4, atol=1e-6)
  if config.generator_loss == "minimax":
    assert float(m1["train/g_loss"]) < 0  # log(1 − D(G(z)))
  else:
    assert float(m1["train/g_loss"]) > 0  # −log D(G(z))
  # Both players moved by about a learning rate.
  for player in ("gen", "disc"):
    moved = max(np.abs(a - b).max() for a, b in zip(_leaves(s0[player].params),
                                                     _leaves(s1[player].params), strict=True))
    assert moved > 1e-4, player


def test_simultaneous_differs_only_in_the_discriminator_the_generator_sees():
  def one_step(**over):
    config = tiny_config(**over)
    task, _, _, _, example = _task_state_and_example(config)
    s = jax.jit(task.init)(jax.random.key(0), example)
    b = {"placeholder": np.zeros((config.batch_size, 1), np.float32)}
    return jax.jit(task.train_step)(s, b)[0]

  alt, sim = one_step(), one_step(simultaneous=True)
  _assert_trees_close(alt["disc"].params, sim["disc"].params, rtol=0, atol=0)
  diff = max(np.abs(a - b).max() for a, b in zip(_leaves(alt["gen"].params),
                                                  _leaves(sim["gen"].params), strict=True))
  assert diff > 1e-6  # the generator saw D_{t+1} in one and D_t in the other
  # Alternating with a frozen discriminator (D_{t+1} = D_t) is the simultaneous step.
  frozen = one_step(d_learning_rate=1e-20)
  _assert_trees_close(frozen["gen"].params, sim["gen"].params, rtol=1e-5, atol=1e-7)


def test_digits_run_reports_classifier_metrics(tmp_path):
  config = tiny_config(**TINY_DIGITS, num_steps=10, checkpoint_every=10, image_every=0,
                       classifier_dir=str(tmp_path / "cache"))
  summary = gan.train_and_evaluate(config, str(tmp_path / "run"))
  assert 0 <= summary["classes_covered"] <= 10
  assert 0.0 <= summary["class_kl"] <= math.log(10) + 1e-9
  assert summary["frechet_classifier_distance"] >= 0
  assert summary["frechet_classifier_distance_test_vs_train"] >= 0
  np.testing.assert_allclose(sum(summary["class_histogram"]), 1.0, rtol=1e-6)
  assert np.isfinite(summary["test/jsd"])
  assert os.path.exists(tmp_path / "run" / "images" / "samples_latest.png")
  assert len(os.listdir(tmp_path / "cache")) == 2  # the classifier was cached


@pytest.mark.parametrize("pack_size", [1, 2])
def test_r1_penalty_equals_per_example_input_gradients(pack_size):
  # The step gets ∇_x l from one VJP of the summed logits; here each pack's
  # gradient is taken on its own (vmap of grad) on the step's real batch.
  config = tiny_config(r1_weight=0.3, pack=pack_size, batch_size=16)
  task, _, _, _, example = _task_state_and_example(config)
  s0 = jax.jit(task.init)(jax.random.key(0), example)
  b = {"placeholder": np.zeros((config.batch_size, 1), np.float32)}
  _, metrics = jax.jit(task.train_step)(s0, b)
  # The step's real batch: the same key derivation as train_step.
  k_d, _ = jax.random.split(step_key(s0["gen"]))
  k_real, _ = jax.random.split(jax.random.split(k_d, config.n_critic)[0])
  x_real = pack(toy.sample_ring(k_real, config.batch_size), pack_size)
  _, d = gan.build_models(config, None)
  grad_one = jax.vmap(jax.grad(lambda x: d.apply(s0["disc"].params, x[None])[0]))(x_real)
  expected = 0.5 * 0.3 * np.mean(np.sum(np.square(np.asarray(grad_one, np.float64)), axis=-1))
  assert expected > 1e-6
  np.testing.assert_allclose(float(metrics["train/r1_penalty"]), expected, rtol=1e-4)
  # The penalty is not part of the logged D loss (log 4 − d_loss stays the JSD estimate).
  np.testing.assert_allclose(float(metrics["train/jsd"]),
                             (math.log(4) - float(metrics["train/d_loss"])) / 2, atol=1e-5)


@pytest.mark.parametrize("over,key", [
    ({"generator_loss": "wasserstein"}, "generator_loss"),
    ({"simultaneous": True, "n_critic": 2}, "n_critic"),
    ({"pack": 3}, "batch_size"),
    ({"real_label": 0.0}, "real_label"),
    ({"r1_weight": -0.1}, "r1_weight"),
    ({"lr_schedule": "linear"}, "lr_schedule"),
    ({"dataset": "digits", "pixel_format": "unit"}, "pixel_format"),
    ({"dataset": "spiral"}, "dataset"),
])
def test_bad_config_names_the_key(tmp_path, over, key):
  with pytest.raises(ConfigError, match=key):
    gan.train_and_evaluate(tiny_config(**over), str(tmp_path))
