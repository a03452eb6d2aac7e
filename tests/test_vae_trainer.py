"""The VAE trainer: end to end, the surgery report's mathematics, sharding, resume, errors."""

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.errors import ConfigError
from dgmjax.eval import surgery_report
from dgmjax.losses.elbo import log_normal_diag, log_standard_normal
from train import harness, vae

TINY = {
    "num_steps": 40, "log_every": 10, "checkpoint_every": 20, "data_limit": 256,
    "batch_size": 32, "eval_batch_size": 64, "hidden": (32,), "latent_dim": 2,
    "flow_layers": 2, "flow_hidden": (16,), "iwae_k": 8, "iwae_k_train": 4, "iwae_chunk": 4,
    "num_images": 16, "quiet": True, "learning_rate": 3e-3,
    "num_devices": 1,
}


def tiny_config(**over):
  c = vae.get_config()
  c.update({**TINY, **over})
  return c


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(ln) for ln in f]


def test_flow_prior_end_to_end_report_pictures_and_reuse(tmp_path):
  config = tiny_config(prior="flow")
  summary = vae.train_and_evaluate(config, str(tmp_path))
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert on_disk["step"] == 40
  assert all(math.isfinite(v) for v in on_disk.values() if isinstance(v, float))
  rows = [r for r in _metrics(tmp_path) if "train/loss" in r]
  assert rows[-1]["train/loss"] < rows[0]["train/loss"] - 20  # it learns (from ~540)
  for split in ("train", "test"):
    r = {k.split("/")[-1]: v for k, v in summary.items() if k.startswith(f"surgery/{split}/")}
    assert r["n"] == 256 and r["log_n"] == pytest.approx(math.log(256))
    assert r["mutual_info"] <= r["log_n"] + 1e-5
    assert r["avg_kl"] == pytest.approx(r["mutual_info"] + r["marginal_kl"], abs=1e-3)
    assert r["elbo"] == pytest.approx(r["rec"] - r["avg_kl"], abs=1e-3)
    assert r["iwae"] > r["elbo"] - 1.0  # a k-sample bound is (in expectation) above the ELBO
  for name in ("reconstructions_latest.png", "samples_latest.png", "latent_density.png"):
    assert (tmp_path / "images" / name).exists(), name
  assert "marginal KL" in (tmp_path / "surgery.md").read_text()
  grids = np.load(tmp_path / "latent_density.npz")
  assert np.all(np.isfinite(grids["log_q_agg"])) and np.all(np.isfinite(grids["log_prior"]))
  # A finished run reloads and reproduces its own report (the API others reuse).
  model, params, cfg, splits = vae.load_trained(str(tmp_path))
  assert cfg.prior == "flow" and splits["test"].shape == (256, 28, 28, 1)
  again = surgery_report.split_report(model, params, splits["test"], vae.report_key(cfg),
                                      iwae_k=cfg.iwae_k, iwae_chunk=cfg.iwae_chunk,
                                      surgery_chunk=cfg.surgery_chunk, batch_size=100)
  # Each example's noise depends on its index only, not on how the split is
  # batched (64 in the run, 100 here), so the whole report is reproduced.
  for k in ("rec", "avg_kl", "mutual_info", "marginal_kl", "iwae"):
    assert again[k] == pytest.approx(summary[f"surgery/test/{k}"], rel=1e-5, abs=1e-4)
  # The evaluation binarization is fixed: independent of config.seed.
  np.testing.assert_array_equal(splits["test"], harness.formatted(
      {"image": harness.load_data(cfg)[2].dataset.test_images}, "binary_dynamic")["image"])


@dataclasses.dataclass(frozen=True, eq=False)
class _LinearGaussian:
  """p(z) = N(0, 1), p(x|z) = N(x; z, s²), and q(z|x) the exact posterior.

  Then every importance weight equals p(x): ELBO and IWAE are exactly
  log N(x; 0, 1 + s²), and MI / marginal KL have 1-D integrals to compare to.
  """

  s2: float = 0.3

  def encode(self, params, x):
    x = x.reshape(x.shape[0], 1)
    c = 1.0 / (1.0 + self.s2)
    return c * x, jnp.full_like(x, math.log(self.s2 * c))

  def log_likelihood(self, params, z, x):
    return log_normal_diag(z, x.reshape(x.shape[0], 1), jnp.full((x.shape[0], 1),
                                                               math.log(self.s2)))

  def log_prior(self, params, z):
    return log_standard_normal(z)


def test_split_report_on_a_model_with_known_answers():
  model = _LinearGaussian()
  x = np.linspace(-2.0, 2.5, 40, dtype=np.float32).reshape(40, 1, 1, 1)
  r = surgery_report.split_report(model, {}, x, jax.random.key(0), num_samples=64, iwae_k=10,
                       iwae_chunk=3, batch_size=16, surgery_chunk=7)
  log_px = -0.5 * (np.log(2 * np.pi * 1.3) + x.ravel().astype(np.float64) ** 2 / 1.3)
  assert r["elbo"] == pytest.approx(log_px.mean(), abs=1e-4)
  assert r["iwae"] == pytest.approx(log_px.mean(), abs=1e-4)
  assert r["log_n"] == pytest.approx(math.log(40)) and r["n"] == 40
  # MI and marginal KL by quadrature over z, independently of the library.
  c = 1 / 1.3
  mu, var = c * x.ravel().astype(np.float64), 0.3 * c
  zg = np.linspace(-8, 8, 8001)
  dz = zg[1] - zg[0]
  log_q = -0.5 * (np.log(2 * np.pi * var) + (zg[None, :] - mu[:, None]) ** 2 / var)
  log_agg = np.logaddexp.reduce(log_q, axis=0) - np.log(40)
  q = np.exp(log_q)
  mi = np.mean(np.sum(q * (log_q - log_agg[None]), axis=1) * dz)
  agg = np.exp(log_agg)
  mkl = np.sum(agg * (log_agg + 0.5 * (np.log(2 * np.pi) + zg ** 2))) * dz
  # Monte-Carlo with 64 × 40 samples: a few hundredths of a nat.
  assert r["mutual_info"] == pytest.approx(mi, abs=0.06)
  assert r["marginal_kl"] == pytest.approx(mkl, abs=0.06)
  assert r["mutual_info"] <= r["log_n"]


def _step_setup(prior):
  config = tiny_config(prior=prior, latent_dim=3)
  train, _, info = harness.load_data(config)
  task = vae.make_task(config, info)
  from dgmjax.data import BatchLoader

  loader = BatchLoader(train, batch_size=config.batch_size, seed=0,
                       transform=harness.image_transform(config.pixel_format))
  batches = [loader.next_numpy() for _ in range(2)]
  return task, batches, {k: v[:8] for k, v in batches[0].items()}


def test_flow_prior_is_trained_through_the_elbo():
  task, batches, example = _step_setup("flow")
  s0 = jax.jit(task.init)(jax.random.key(0), example)
  s1 = s0
  for b in batches:
    s1, m1 = jax.jit(task.train_step)(s1, b)
  np.testing.assert_allclose(float(m1["train/elbo"]),
                             float(m1["train/rec"]) - float(m1["train/kl"]), rtol=1e-5)
  d = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), s0.params["prior"],
                   s1.params["prior"])
  assert max(jax.tree.leaves(d)) > 1e-4


def test_resume_equals_uninterrupted(tmp_path):
  full = tiny_config(prior="flow", num_steps=20, checkpoint_every=10)
  _, _, info = harness.load_data(full)
  # One task (and so one compilation) for all three runs; only the training
  # loop and the checkpoints are under test here.
  task = dataclasses.replace(vae.make_task(full, info), report=None, images=None, evals={})

  def run(config, workdir):
    harness.train_and_evaluate(config, str(workdir), lambda c, i: task)

  def params_of(workdir):
    state, step = harness.restore_state(str(workdir), task, full,
                                        {"image": np.zeros((1, 28, 28, 1), np.float32)})
    return step, state.params

  run(full, tmp_path / "a")
  run(tiny_config(prior="flow", num_steps=10, checkpoint_every=10), tmp_path / "b")
  run(full, tmp_path / "b")
  sa, pa = params_of(tmp_path / "a")
  sb, pb = params_of(tmp_path / "b")
  assert sa == sb == 20
  for a, b in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_gaussian_likelihood_and_gaussian_prior(tmp_path):
  # (The conv encoder/decoder are covered in test_nn_vae.py; compiling them
  # here too would double this file's time.)
  config = tiny_config(prior="gaussian", pixel_format="unit", likelihood="gaussian",
                       latent_dim=4,
                       num_steps=10, iwae_k=4, iwae_k_train=0, data_limit=96,
                       num_images=8)
  summary = vae.train_and_evaluate(config, str(tmp_path))
  assert math.isfinite(summary["surgery/test/iwae"]) and "surgery/train/iwae" not in summary
  model, params, _, _ = vae.load_trained(str(tmp_path))
  assert float(params["obs_log_var"]) != pytest.approx(math.log(0.01))  # σ² is learned
  for split in ("train", "test"):  # the MC average KL agrees with the closed form
    assert summary[f"surgery/{split}/avg_kl"] == pytest.approx(
        summary[f"surgery/{split}/avg_kl_analytic"], rel=0.1, abs=0.5)


@pytest.mark.parametrize("over, key", [
    ({"prior": "vamp"}, "prior"),
    ({"prior": "flow", "latent_dim": 1}, "latent_dim"),
    ({"arch": "resnet"}, "arch"),
    ({"likelihood": "bernoulli", "pixel_format": "unit"}, "pixel_format"),
    ({"likelihood": "gaussian", "pixel_format": "binary_dynamic"}, "pixel_format"),
    ({"likelihood": "poisson"}, "likelihood"),
    ({"flow_hidden": ()}, "flow_hidden"),
    ({"iwae_k": 0}, "iwae_k"),
])
def test_bad_config_names_the_key(tmp_path, over, key):
  with pytest.raises(ConfigError, match=f"config.{key}"):
    vae.train_and_evaluate(tiny_config(**over), str(tmp_path))
