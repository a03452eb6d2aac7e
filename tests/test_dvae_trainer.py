"""train.dvae: the categorical VAE / dVAE trainer.

Properties: a tiny run writes a finite summary, learns, anneals τ as the pure
schedule says and draws its pictures; the IWAE bound and the ELBO agree with
exact enumeration of a small discrete latent space (ELBO ≤ L_k ≤ log p(x),
L_k → log p(x)); the data-parallel step equals the single-device step; resuming equals an uninterrupted run; bad configs name
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
from dgmjax.losses import schedules
from train import dvae, harness

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = {
    "num_steps": 30, "log_every": 1, "checkpoint_every": 30, "data_limit": 256,
    "batch_size": 32, "eval_batch_size": 64, "eval_every": 0, "num_images": 16,
    "num_vars": 4, "num_classes": 5, "hidden": (32, 16), "iwae_samples": 20,
    "iwae_chunk": 8, "num_codes": 8, "code_dim": 4, "channels": (8, 8),
    "res_hidden": 8, "quiet": True, "num_devices": 1,
}
TINY_DVAE = {
    "model": "dvae", "likelihood": "logit_laplace", "pixel_format": "unit",
    "prior": "learned", "kl_warmup_steps": 10, "temperature": "exponential",
    "temperature_final": 1 / 16, "anneal_steps": 10,
}


def tiny_config(**over):
  c = dvae.get_config()
  c.update({**TINY, **over})
  return c


def _info(shape=(28, 28, 1)):
  return harness.DataInfo(shape, 256, 256)


def test_tiny_run_learns_anneals_reports_and_resumes(tmp_path):
  over = {"anneal_rate": 0.05, "anneal_every": 5, "learning_rate": 3e-3, "prior": "learned",
          "kl_warmup_steps": 10, "checkpoint_every": 15}
  summary = harness.train_and_evaluate(tiny_config(**over), str(tmp_path / "ref"),
                                       dvae.make_task)
  on_disk = json.loads((tmp_path / "ref" / "summary.json").read_text())
  for key in ("test/neg_elbo", "test/recon", "test/kl", "test/neg_iwae",
              "train_set/neg_elbo", "overfit_gap", "test/code_perplexity",
              "test/codes_used", "test/codebook_perplexity"):
    assert np.isfinite(on_disk[key]), key
  assert len(on_disk["test/code_perplexity_per_variable"]) == 4
  assert 1.0 <= on_disk["test/code_perplexity"] <= 5.0
  np.testing.assert_allclose(summary["test/neg_elbo"], summary["test/recon"] + summary["test/kl"],
                             rtol=1e-5)
  assert summary["test/kl"] >= 0.0
  # The 20-sample bound is tighter than the 1-sample ELBO (up to MC noise).
  assert summary["test/neg_iwae"] <= summary["test/neg_elbo"] + 0.5
  for name in ("reconstructions_latest.png", "samples_latest.png", "code_usage.png"):
    assert (tmp_path / "ref" / "images" / name).exists(), name

  rows = [json.loads(ln) for ln in open(tmp_path / "ref" / "metrics.jsonl")]
  rows = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in rows] == list(range(1, 31))
  first = np.mean([r["train/loss"] for r in rows[:5]])
  last = np.mean([r["train/loss"] for r in rows[-5:]])
  assert last < first - 20, (first, last)
  # τ and β logged at "step t" are the schedules at the update's step t − 1.
  tau = schedules.jang_temperature_schedule(rate=0.05, every=5, min_temperature=0.5)
  for r in rows:
    np.testing.assert_allclose(r["train/temperature"], float(tau(r["step"] - 1)), rtol=1e-6)
    np.testing.assert_allclose(r["train/kl_weight"], min((r["step"] - 1) / 10, 1.0), rtol=1e-6)
  assert rows[-1]["train/temperature"] < 1.0

  # Stopping at the step-15 checkpoint and rerunning gives the same run.
  harness.train_and_evaluate(tiny_config(**over, num_steps=15, iwae_samples=0),
                             str(tmp_path / "res"), dvae.make_task)
  res = harness.train_and_evaluate(tiny_config(**over), str(tmp_path / "res"), dvae.make_task)
  config = tiny_config(**over)
  batches, info = _batches(config, 1)
  task = dvae.make_task(config, info)
  example = {k: v[:8] for k, v in batches[0].items()}
  a, step_a = harness.restore_state(str(tmp_path / "ref"), task, config, example)
  b, step_b = harness.restore_state(str(tmp_path / "res"), task, config, example)
  assert step_a == step_b == 30
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert float(np.abs(np.asarray(a.params["prior"])).max()) > 0  # the prior is trained
  assert res["test/neg_elbo"] == summary["test/neg_elbo"]
  assert res["test/neg_iwae"] == summary["test/neg_iwae"]


@pytest.mark.parametrize("prior", ["uniform", "learned"])
def test_elbo_and_iwae_against_exact_enumeration(prior):
  """N = 2 variables × K = 3 classes: all 9 codes can be summed exactly."""
  config = tiny_config(num_vars=2, num_classes=3, hidden=(16,), prior=prior)
  model = dvae.build_model(config, (4, 4, 1))
  x = (jax.random.uniform(jax.random.key(0), (3, 4, 4, 1)) < 0.5).astype(jnp.float32)
  params = model.init(jax.random.key(1), x)
  # A sharp decoder (a posterior far from q) but a broad q, so that k = 4000
  # proposals cover every code with non-negligible posterior mass.
  params["decoder"] = jax.tree.map(lambda p: 3.0 * p, params["decoder"])
  if prior == "learned":
    params["prior"] = jnp.array([[1.0, -1.0, 0.0], [0.5, 0.0, -2.0]])

  codes = np.array([np.eye(3)[list(c)] for c in itertools.product(range(3), repeat=2)],
                   np.float32)  # (9, 2, 3)
  logits = model.logits(params, x)  # (3, 2, 3)

  @jax.jit
  def terms(c):  # one code for the whole batch -> log p(x|c), log q(c|x)
    cb = jnp.broadcast_to(c, (3, 2, 3))
    return model.log_likelihood(params, cb, x), model.log_posterior(cb, logits)

  ll, lq = (np.stack(t) for t in zip(*[terms(c) for c in codes], strict=True))  # (9, B)
  lp = np.asarray(model.log_prior(params, jnp.asarray(codes)))[:, None]  # (9, 1)
  np.testing.assert_allclose(np.exp(lq).sum(0), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.exp(lp).sum(), 1.0, rtol=1e-5)
  log_px = np.log(np.exp(ll + lp).sum(0))
  q = np.exp(lq)
  exact_elbo = (q * (ll + lp - lq)).sum(0)
  # The trainer's ELBO = E_q[log p(x|c)] − KL(q||p), KL in closed form.
  kl = np.asarray(model.kl(params, logits))
  np.testing.assert_allclose((q * ll).sum(0) - kl, exact_elbo, rtol=1e-5, atol=1e-4)
  assert np.all(log_px - exact_elbo > 0.05)  # a real gap to close

  bound = jax.jit(functools.partial(model.iwae_bound, num_samples=4000, chunk_size=500))
  lk = np.asarray(bound(params, x, jax.random.key(2)))
  assert np.all(lk >= exact_elbo)
  # Delta method: sd(L_k) ≈ sqrt(χ²(p(c|x) || q) / k), χ² = Σ_c post²/q − 1.
  post = np.exp(ll + lp - log_px)
  sd = np.sqrt(((post**2 / q).sum(0) - 1.0) / 4000)
  np.testing.assert_array_less(np.abs(lk - log_px), 5 * sd + 1e-3)
  # k = 1 is an unbiased ELBO estimate: average many independent draws.
  one = jax.jit(jax.vmap(lambda k: model.iwae_bound(params, x, k, num_samples=1,
                                                     chunk_size=1)))
  draws = np.asarray(one(jax.random.split(jax.random.key(3), 2000)))
  se = draws.std(0) / np.sqrt(len(draws))
  np.testing.assert_array_less(np.abs(draws.mean(0) - exact_elbo), 5 * se + 1e-4)


def test_logit_laplace_scale_floor_bounds_the_density():
  """log b ≥ min_log_scale, so no pixel can buy unbounded density."""
  config = tiny_config(likelihood="logit_laplace", pixel_format="unit", min_log_scale=-2.0)
  model = dvae.build_model(config, (4, 4, 1))
  x = jnp.zeros((2, 4, 4, 1))  # a constant background, mapped to 0.1
  codes = jnp.zeros((2, 4, 5))
  params = jax.jit(model.init)(jax.random.key(0), x)
  # Push the decoder's log-scale channel to -1000 and its mean exactly onto x.
  dense = sorted(params["decoder"]["params"])[-1]
  bias = params["decoder"]["params"][dense]["bias"].reshape(4, 4, 2)
  kernel = params["decoder"]["params"][dense]["kernel"]
  bias = bias.at[..., 0].set(np.log(0.1 / 0.9)).at[..., 1].set(-1000.0)
  params["decoder"]["params"][dense] = {"kernel": 0.0 * kernel, "bias": bias.reshape(-1)}
  ll = np.asarray(jax.jit(model.log_likelihood)(params, codes, x))
  per_pixel_max = -np.log(2.0) + 2.0 - np.log(0.1 * 0.9)  # b at the floor, μ exact
  np.testing.assert_allclose(ll, 16 * per_pixel_max, rtol=1e-5)
  grad = jax.jit(jax.grad(lambda p: model.log_likelihood(p, codes, x).sum()))(params)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grad))


def _batches(config, n):
  train, _, info = harness.load_data(config)
  loader = BatchLoader(train, batch_size=config.batch_size, seed=0,
                       transform=harness.image_transform(config.pixel_format))
  return [loader.next_numpy() for _ in range(n)], info


def test_sharded_step_equals_single_device():
  config = tiny_config(estimator="st_gumbel", prior="learned", kl_warmup_steps=3)
  batches, info = _batches(config, 2)
  task = dvae.make_task(config, info)
  example = {k: v[:8] for k, v in batches[0].items()}
  s0, (s1, m1), (s8, m8) = steps_two_ways(task, batches, example)
  for x, y in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
  for k in m1:  # global means, and the same per-example noise on every layout
    np.testing.assert_allclose(float(m1[k]), float(m8[k]), rtol=1e-4)
  moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
              for a, b in zip(jax.tree.leaves(s0.params), jax.tree.leaves(s1.params), strict=True))
  assert moved > 1e-4


def test_evaluations_do_not_depend_on_batch_size_or_device_count():
  # The test figures (ELBO with hard codes, relaxed ELBO, IWAE) are Monte Carlo
  # estimates: each example's draws are keyed by its position in the split.
  # The categorical VAE: the conv dVAE runs the same key code, at more cost.
  config = tiny_config(data_limit=40, iwae_samples=6, iwae_chunk=4)
  _, test, info = harness.load_data(config)
  results = evals_across_layouts(dvae.make_task(config, info), config, test)
  assert set(results) == {"elbo", "iwae"}
  assert_same_across_layouts(results, rtol=1e-4, atol=1e-4)


def test_dvae_end_to_end(tmp_path):
  """The conv dVAE with logit-Laplace likelihood, learned prior, τ → 1/16."""
  over = {**TINY_DVAE, "num_steps": 10, "log_every": 5, "iwae_samples": 4, "iwae_chunk": 2}
  s = harness.train_and_evaluate(tiny_config(**over), str(tmp_path), dvae.make_task)
  for key in ("test/neg_elbo", "test/neg_iwae", "train_set/neg_elbo",
              "test/codebook_perplexity"):
    assert np.isfinite(s[key]), key
  # A 7×7 grid of variables over an 8-entry codebook.
  assert 1.0 <= s["test/codebook_perplexity"] <= 8.0
  assert len(s["test/code_perplexity_per_variable"]) == 49
  assert 0.0 <= s["test/kl"] <= 49 * np.log(8) + 1e-3
  # τ of the last update (step 9 of 10): (1/16)^(9/10) on the exponential path.
  np.testing.assert_allclose(s["train/temperature_final"], (1 / 16) ** 0.9, rtol=1e-5)
  for name in ("reconstructions_latest.png", "samples_latest.png", "code_usage.png"):
    assert (tmp_path / "images" / name).exists(), name


@pytest.mark.parametrize("over,key", [
    ({"model": "vqvae"}, "model"),
    ({"estimator": "reinforce"}, "estimator"),
    ({"likelihood": "gaussian"}, "likelihood"),
    ({"pixel_format": "unit"}, "pixel_format"),  # Bernoulli on grey pixels
    ({"likelihood": "logit_laplace"}, "pixel_format"),  # logit-Laplace on binary
    ({"prior": "flow"}, "prior"),
    ({"num_classes": 1}, "num_classes"),
    ({"iwae_chunk": 0}, "iwae_chunk"),
    ({"hidden": ()}, "hidden"),
    ({"temperature_final": 2.0}, "temperature"),  # min above init
    ({"temperature": "linear"}, "temperature"),
])
def test_bad_config_names_the_key(over, key):
  with pytest.raises(ConfigError, match=key):
    dvae.make_task(tiny_config(**over), _info())


def test_dvae_needs_sides_divisible_by_four():
  with pytest.raises(ConfigError, match="model"):
    dvae.make_task(tiny_config(**TINY_DVAE), _info((30, 30, 1)))


def test_cli_reports_a_bad_estimator_in_one_line(tmp_path):
  r = subprocess.run([sys.executable, "-m", "train.dvae", f"--workdir={tmp_path}",
                      "--config.estimator=rebar", "--config.data_limit=64",
                      "--config.batch_size=32"],
                     cwd=REPO, capture_output=True, text=True, timeout=300)
  assert r.returncode == 1
  assert "config.estimator" in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]
