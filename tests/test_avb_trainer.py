"""train.avb: Adversarial Variational Bayes on the shared harness.

Properties: a tiny toy run writes finite figures, learns, and its
log-likelihoods obey Σ_x p(x) ≤ 1 (mean log p ≤ −log 4 on the four points);
the grid quadrature normalises over all 16 binary 2×2 images; the importance-
sampled log p(x) agrees with it and is a lower bound in expectation; the model
step holds T fixed yet its gradient reaches the encoder through z inside T;
with adaptive contrast and T ≡ 0 the KL estimate of a Gaussian encoder is the
analytic KL; the data-parallel step equals the single-device step; resuming equals an uninterrupted run for both players; bad configs name
their key.
"""

import functools
import itertools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests_support import (
  assert_same_across_layouts,
  evals_across_layouts,
  steps_two_ways,
)

from dgmjax.data import BatchLoader
from dgmjax.errors import ConfigError
from dgmjax.eval import likelihood
from dgmjax.losses import elbo
from train import avb, harness

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG4 = float(np.log(4.0))

TINY = {
    "num_steps": 20, "log_every": 5, "checkpoint_every": 20, "batch_size": 64,
    "eval_batch_size": 8, "toy_train_size": 512, "hidden": (16, 16), "disc_hidden": (16, 16),
    "noise_dim": 3, "ll_samples": 64, "ll_chunk": 32, "ll_moment_samples": 16,
    "grid_size": 96, "scatter_samples": 16, "eval_samples": 4, "quiet": True,
    "num_devices": 1,
}


def tiny_config(**over):
  c = avb.get_config()
  c.update({**TINY, **over})
  return c


def _toy(config, n_batches):
  train, _, info = avb.load(config)
  loader = BatchLoader(train, batch_size=config.batch_size, seed=0,
                       transform=harness.image_transform(config.pixel_format))
  return [loader.next_numpy() for _ in range(n_batches)], info


def _leaves(tree):
  out = []
  for x in jax.tree.leaves(tree):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    out.append(np.asarray(x))
  return out


def test_tiny_toy_run_learns_reports_and_resumes_exactly(tmp_path):
  over = {"num_steps": 60, "learning_rate": 3e-3, "disc_learning_rate": 3e-3,
          "log_every": 5, "checkpoint_every": 30}
  summary = avb.train_and_evaluate(tiny_config(**over), str(tmp_path / "ref"))
  on_disk = json.loads((tmp_path / "ref" / "summary.json").read_text())
  for key in ("test/elbo", "test/rec", "test/kl", "test/log_px", "test/log_px_grid",
              "num_params/model", "num_params/disc"):
    assert np.isfinite(on_disk[key]), key
  # The four points are 4 of the 16 binary images, so Σ p(x_i) ≤ 1 and by
  # Jensen mean log p(x_i) ≤ −log 4 — for any model, trained or not.
  assert summary["test/log_px_grid"] <= -LOG4 + 1e-3
  assert summary["test/log_px"] <= -LOG4 + 0.02
  assert abs(summary["test/log_px"] - summary["test/log_px_grid"]) < 0.1
  rows = [json.loads(ln) for ln in open(tmp_path / "ref" / "metrics.jsonl")]
  rows = [r for r in rows if "train/loss" in r]
  assert len(rows) == 12
  assert rows[-1]["train/loss"] < rows[0]["train/loss"] - 0.2, (rows[0], rows[-1])
  for r in rows:
    assert 0.0 <= r["train/d_acc"] <= 1.0 and r["train/d_loss"] > 0
    np.testing.assert_allclose(r["train/elbo"], r["train/rec"] - r["train/kl"], rtol=1e-5)
  assert (tmp_path / "ref" / "images" / "posteriors.png").exists()
  z = np.load(tmp_path / "ref" / "posterior_samples.npz")["z"]
  assert z.shape == (16, 4, 2) and np.all(np.isfinite(z))

  # Interrupted at 30 and resumed (the report's estimators do not touch the
  # state, so they are switched off here to save time).
  cheap = {**over, "ll_samples": 0, "grid_size": 0}
  avb.train_and_evaluate(tiny_config(**{**cheap, "num_steps": 30}), str(tmp_path / "res"))
  res = avb.train_and_evaluate(tiny_config(**cheap), str(tmp_path / "res"))
  config = tiny_config(**over)
  batches, info = _toy(config, 1)
  task = avb.make_task(config, info)
  a, step_a = harness.restore_state(str(tmp_path / "ref"), task, config, batches[0])
  b, step_b = harness.restore_state(str(tmp_path / "res"), task, config, batches[0])
  assert step_a == step_b == 60
  assert set(a) == {"model", "disc"}
  for x, y in zip(_leaves(a), _leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)  # both players, optimiser states, keys
  assert int(a["disc"].step) == 60 * config.disc_steps
  assert summary["test/elbo"] == res["test/elbo"]
  rows_res = [json.loads(ln) for ln in open(tmp_path / "res" / "metrics.jsonl")]
  rows_res = [r for r in rows_res if "train/loss" in r]
  strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rs]
  assert strip(rows) == strip(rows_res)


def test_grid_normalises_and_importance_sampling_agrees():
  config = tiny_config()
  model = avb.build_model(config, avb.TOY_IMAGE_SHAPE)
  points = jnp.eye(4).reshape(4, 2, 2, 1)
  params, _ = model.init(jax.random.key(0), points)
  # A sharper decoder than at init, so p(x) is far from uniform.
  params["decoder"] = jax.tree.map(lambda p: 1.5 * p, params["decoder"])
  dec = lambda z: model.decoder.apply(params["decoder"], z).reshape(z.shape[0], -1)
  every = np.array(list(itertools.product([0.0, 1.0], repeat=4)), np.float32)  # 16 images
  lp_all = likelihood.grid_log_marginal(dec, every, size=256)
  np.testing.assert_allclose(np.exp(lp_all).sum(), 1.0, atol=2e-3)
  one_hot = [int(np.flatnonzero((every == np.eye(4)[i]).all(1))[0]) for i in range(4)]
  lp_grid = lp_all[one_hot]
  # Large k: the importance-sampled estimate converges to the grid value. An
  # untrained encoder is a poor proposal, so half of it is the prior
  # (defensive mixture), which bounds the weights.
  big = jax.jit(functools.partial(model.log_marginal, num_samples=20000, chunk_size=2000,
                                  num_moment_samples=256, scales=(1.0, 2.0),
                                  prior_weight=0.5))
  np.testing.assert_allclose(np.asarray(big(params, points, jax.random.key(1))), lp_grid,
                             atol=0.05)
  # k = 4 draws are biased low: their mean lies below log p(x) (Jensen).
  small = jax.jit(jax.vmap(lambda k: model.log_marginal(params, points, k, num_samples=4,
                                                        chunk_size=4, num_moment_samples=64)))
  draws = np.asarray(small(jax.random.split(jax.random.key(2), 500)))
  se = draws.std(0) / np.sqrt(len(draws))
  assert np.all(draws.mean(0) <= lp_grid + 3 * se)


def test_model_step_holds_T_fixed_and_differentiates_through_z():
  config = tiny_config(encoder="gaussian", kl="adversarial")
  batches, info = _toy(config, 1)
  task = avb.make_task(config, info)
  state = jax.jit(task.init)(jax.random.key(0), batches[0])
  # A constant decoder: log p(x|z) no longer depends on z, so the encoder's
  # gradient can only come through z inside T.
  params = state["model"].params
  params["decoder"] = jax.tree.map(jnp.zeros_like, params["decoder"])
  state["model"] = state["model"].replace(params=params)
  model = avb.build_model(config, info.image_shape)
  x = jnp.asarray(batches[0]["image"])
  grads, _ = jax.grad(model.model_loss, has_aux=True)(params, state["disc"].params, x,
                                                       jax.random.key(1))
  # T's parameters are a constant of the model's loss, yet its gradient in z
  # reached the encoder (the decoder is constant, so that is the only path).
  assert max(float(np.max(np.abs(g))) for g in _leaves(grads["encoder"])) > 1e-6
  new, _ = jax.jit(task.train_step)(state, batches[0])
  assert int(new["disc"].step) == config.disc_steps  # T moves only in its own updates

  # The gradient through T equals the gradient of the loss with T's logit as a
  # function of z alone (independent computation, T's parameters closed over).
  eps = jax.random.normal(jax.random.key(3), (1, x.shape[0], config.latent_dim))
  dp = state["disc"].params

  def kl_through_z(enc_params):
    mean, log_var = model.encoder.apply(enc_params, x)
    z = mean + jnp.exp(0.5 * log_var) * eps
    return jnp.mean(model.disc.apply(dp, x, z))

  def kl_from_terms(enc_params):
    p = dict(params, encoder=enc_params)
    return jnp.mean(model.terms(p, dp, x, eps)[1])

  g1 = jax.grad(kl_through_z)(params["encoder"])
  g2 = jax.grad(kl_from_terms)(params["encoder"])
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(a).sum()) > 0


def test_adaptive_contrast_with_zero_T_gives_analytic_kl_for_gaussian_encoder():
  """T ≡ 0 is optimal when r_α = q: the estimate is E_q[log q − log p] exactly."""
  config = tiny_config(encoder="gaussian", adaptive_contrast=True, disc_prior_term=False)
  model = avb.build_model(config, avb.TOY_IMAGE_SHAPE)
  points = jnp.eye(4).reshape(4, 2, 2, 1)
  params, disc = model.init(jax.random.key(0), points)
  disc = jax.tree.map(jnp.zeros_like, disc)
  eps = jax.random.normal(jax.random.key(1), (20000, 4, config.latent_dim))
  _, kl, exact = jax.jit(model.terms)(params, disc, points, eps)
  kl, exact = np.asarray(kl), np.asarray(exact)
  se = kl.std(0) / np.sqrt(kl.shape[0])
  np.testing.assert_array_less(np.abs(kl.mean(0) - exact[0]), 4 * se + 1e-4)
  # Per sample it is log q(z|x) − log p(z) (not only in the mean).
  mean, log_var = model.encoder.apply(params["encoder"], points)
  z = mean + jnp.exp(0.5 * log_var) * eps[:3]
  ref = elbo.log_normal_diag(z, mean, log_var) - elbo.log_standard_normal(z)
  np.testing.assert_allclose(kl[:3], np.asarray(ref), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("over", [
    {"adaptive_contrast": True, "ac_samples": 3, "disc_steps": 1},
    {"encoder": "gaussian", "kl": "analytic"},
], ids=["avb_adaptive_contrast", "gaussian_vae"])
def test_sharded_step_equals_single_device(over):
  config = tiny_config(**over)
  batches, info = _toy(config, 2)
  task = avb.make_task(config, info)
  s0, (s1, m1), (s8, m8) = steps_two_ways(task, batches, batches[0])
  for a, b in zip(_leaves(s1), _leaves(s8), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  for k in m1:  # global means, with the same per-example noise on every layout
    np.testing.assert_allclose(float(m1[k]), float(m8[k]), rtol=1e-4, atol=1e-6)
  for player in s1:  # every player moved
    moved = max(float(np.max(np.abs(a - b)))
                for a, b in zip(_leaves(s0[player].params), _leaves(s1[player].params),
                                strict=True))
    assert moved > 1e-4, player


@pytest.mark.parametrize("over", [{}, {"encoder": "implicit", "adaptive_contrast": True}])
def test_evaluations_do_not_depend_on_batch_size_or_device_count(over):
  # ELBO, KL and importance-sampled log p(x) are Monte Carlo estimates; each
  # example's noise is keyed by its position in the split.
  config = tiny_config(**over)
  _, test, info = avb.load(config)
  results = evals_across_layouts(avb.make_task(config, info), config, test)
  assert set(results) == {"elbo", "log_px", "posterior"}
  assert_same_across_layouts(results, rtol=1e-4, atol=1e-4)



@pytest.mark.parametrize("over,key", [
    ({"encoder": "flow"}, "encoder"),
    ({"kl": "exact"}, "kl"),
    ({"kl": "analytic"}, "kl"),  # an implicit encoder has no analytic KL
    ({"encoder": "gaussian", "kl": "analytic", "adaptive_contrast": True}, "adaptive_contrast"),
    ({"adaptive_contrast": True, "ac_samples": 1}, "ac_samples"),
    ({"pixel_format": "unit"}, "pixel_format"),
    ({"disc_activation": "swish2"}, "disc_activation"),
    ({"disc_steps": 0}, "disc_steps"),
    ({"hidden": ()}, "hidden"),
    ({"ll_moment_samples": 1}, "ll_moment_samples"),
    ({"toy_train_size": 32}, "toy_train_size"),
])
def test_bad_config_names_the_key(over, key):
  with pytest.raises(ConfigError, match=key):
    avb.load(tiny_config(**over))
  with pytest.raises(ConfigError, match=key):
    avb.make_task(tiny_config(**over), harness.DataInfo(avb.TOY_IMAGE_SHAPE, 512, 4))


def test_cli_reports_a_bad_encoder_in_one_line(tmp_path):
  r = subprocess.run([sys.executable, "-m", "train.avb", f"--workdir={tmp_path}",
                      "--config.encoder=normalizing_flow"],
                     cwd=REPO, capture_output=True, text=True, timeout=300)
  assert r.returncode == 1
  assert "config.encoder" in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]
