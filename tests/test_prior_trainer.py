"""train.prior end to end: a tiny VQ-VAE run -> its tokens -> a prior -> samples."""

import json
import math
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from tests_support import tiny_vqvae_config

from dgmjax.errors import ConfigError
from dgmjax.eval import samples as sample_eval
from train import gan, harness, prior, tokenizer, vqvae

# Module-scoped fixtures: the whole file runs on one xdist worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("prior_trainer")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("classifier"))


def _tiny_prior(tokenizer, classifier_dir="", **over):
  c = prior.get_config()
  c.update({
      "tokenizer": tokenizer, "num_steps": 80, "batch_size": 32, "eval_batch_size": 64,
      "log_every": 20, "checkpoint_every": 40, "num_layers": 2, "width": 32,
      # num_images = num_samples = eval_batch_size: the picture and the scored
      # samples share one compiled sampler.
      "num_heads": 4, "num_samples": 64, "num_images": 64, "learning_rate": 3e-3,
      "classifier_steps": 20, "classifier_dir": classifier_dir, "quiet": True, "num_devices": 1,
      **over})
  return c


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("vqvae")
  harness.train_and_evaluate(tiny_vqvae_config(num_steps=20, checkpoint_every=20), str(path), vqvae.make_task)
  return str(path)


@pytest.fixture(scope="module")
def trained_prior(tokenizer_dir, classifier_dir, tmp_path_factory):
  """A finished autoregressive prior: (config, workdir, summary)."""
  path = tmp_path_factory.mktemp("prior")
  config = _tiny_prior(tokenizer_dir, classifier_dir, top_k=8)
  return config, str(path), prior.train_and_evaluate(config, str(path))


def test_autoregressive_prior_learns_the_tokens_and_samples(trained_prior, tokenizer_dir):
  config, workdir, summary = trained_prior
  tok = tokenizer.load_tokenizer(tokenizer_dir)
  assert (summary["seq_len"], summary["vocab_size"]) == (49, 16)  # 28/4 squared, K = 16
  # Better than the uniform code, log2 K bits: the prior learned something.
  assert summary["test/bits_per_token"] < summary["uniform_bits_per_token"] - 0.3
  # The cached tokens are the tokenizer's own codes of its test images.
  with np.load(os.path.join(workdir, "tokens.npz")) as z:
    cached = z["test_tokens"]
  x = harness.formatted({"image": tok.splits["test"]["image"][:5]}, tok.config.pixel_format)
  np.testing.assert_array_equal(cached[:5], np.asarray(tok.encode(x["image"])))
  # The tokenizer's reconstruction error, labelled as such, is the VQ-VAE run's
  # own test MSE (computed there by the harness's evaluation, unclipped; here
  # through decode, clipped to [0, 1], which can only lower it).
  with open(os.path.join(tokenizer_dir, "summary.json")) as f:
    own = json.load(f)["test/mse"]
  assert own * 0.9 < summary["tokenizer/test_mse"] <= own * 1.001
  assert "test/two_stage_neg_elbo" not in summary  # a VQ-VAE has no ELBO
  picture = os.path.join(workdir, "images", "samples.png")
  if not os.path.exists(picture):
    picture = os.path.join(workdir, "images", "samples_latest.png")
  assert np.asarray(Image.open(picture)).shape[:2] == (8 * 29 + 1, 8 * 29 + 1)  # 64 samples
  assert summary["sample/images_per_sec"] > 0 and summary["sample/first_batch_s"] > 0
  assert summary["sampling"] == {"order": "autoregressive", "num_samples": 64,
                                 "temperature": 1.0, "top_k": 8, "top_p": 1.0}
  # The samples the run decoded use only the top-8 codes of each step: check
  # the sampler directly with the restored prior.
  example = {k: v[:4] for k, v in prior.load_tokens(config, workdir)[1].items()}
  task = prior.make_task(config, harness.DataInfo(tok.image_shape, 1, 1))
  state, step = harness.restore_state(workdir, task, config, example)
  assert step == 80
  model = prior.build_model(config, tok)
  seqs = np.asarray(prior.sample(config, model, state.params, jax.random.key(0), batch_size=8))
  assert seqs.shape == (8, 49) and ((seqs >= 0) & (seqs < 16)).all()
  logits = np.asarray(jax.jit(model.apply)(state.params, seqs))
  rank = (logits > np.take_along_axis(logits, seqs[..., None], -1)).sum(-1)
  assert (rank < 8).all()  # every drawn token was among the 8 most likely


def _report(config, monkeypatch, fake_tokens):
  """The task's end-of-run report with the sampler replaced by ``fake_tokens(labels, n)``."""
  tok = tokenizer.load_tokenizer(config.tokenizer)
  task = prior.make_task(config, harness.DataInfo(tok.image_shape, 1, 1))
  n = 4
  example = {"tokens": np.zeros((n, tok.seq_len), np.int32), "label": np.arange(n) % 10}
  state = jax.jit(task.init)(jax.random.key(0), example)
  monkeypatch.setattr(prior, "sample", lambda cfg, model, params, key, labels=None, *,
                      batch_size=None: fake_tokens(labels, batch_size))
  ctx = harness.Context(config, "", harness.DataInfo(tok.image_shape, 1, 1), True, 0,
                        {"nll": {"test": {"nats_per_token": 1.0}}}, None)
  return tok, task, state, ctx


def test_sample_figures_are_train_gans_with_its_classifier(tokenizer_dir, classifier_dir,
                                                           monkeypatch):
  # "Samples" that are the tokenizer's codes of real test images: their decoded
  # reconstructions must get exactly the figures train.gan's evaluation gives
  # them, with the classifier train.gan loads for the same digits.
  config = _tiny_prior(tokenizer_dir, classifier_dir, num_samples=150, eval_batch_size=64)
  tok = tokenizer.load_tokenizer(tokenizer_dir)
  real = tok.tokens("test")[:192]
  calls = []

  def fake_tokens(labels, b):
    calls.append(b)
    start = 64 * (len(calls) - 1) % 192
    return jnp.asarray(real[start:start + b])

  tok, task, state, ctx = _report(config, monkeypatch, fake_tokens)
  out = task.report(state, ctx)
  assert calls[:3] == [64, 64, 64]  # fixed-shape batches; the last one is cut to 150
  gan_config = gan.get_config()
  gan_config.update(dataset="digits", data_limit=256, classifier_dir=classifier_dir,
                    classifier_steps=20)
  dataset = harness.load_data(gan_config)[2].dataset  # what train.gan scores against
  before = sorted(os.listdir(classifier_dir))
  classifier = sample_eval.digit_classifier(dataset, cache_dir=classifier_dir, steps=20)
  assert sorted(os.listdir(classifier_dir)) == before  # the prior's cached classifier
  # Decoded in the report's batches, so the images are the same to the last bit.
  decoded = np.concatenate([np.asarray(tok.decode(jnp.asarray(real[i:i + 64])))
                            for i in (0, 64, 128)])[:150]
  want = sample_eval.classifier_sample_metrics(decoded, dataset, classifier)
  for key in ("classes_covered", "class_kl", "frechet_classifier_distance",
              "frechet_classifier_distance_test_vs_train", "classifier_test_accuracy"):
    assert out[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), key
  assert out["test/bits_per_token"] == pytest.approx(1 / np.log(2))


def test_class_conditional_picture_has_one_row_per_digit(tokenizer_dir, classifier_dir,
                                                        monkeypatch):
  # A stand-in prior whose every token is its label: row r of the picture must
  # then be the decoded all-r grid, r = 0..9, whatever num_images.
  config = _tiny_prior(tokenizer_dir, classifier_dir, class_conditional=True, num_images=25,
                       num_samples=20, eval_batch_size=8)
  tok, task, state, ctx = _report(
      config, monkeypatch,
      lambda labels, b: jnp.broadcast_to(jnp.asarray(labels)[:, None], (len(labels), 49)))
  grid = task.images(state, None)["samples"].astype(int)
  assert grid.shape[:2] == (10 * 29 + 1, 2 * 29 + 1)
  digits = np.asarray(tok.decode(jnp.repeat(jnp.arange(10), 49).reshape(10, 49)))
  digits = (np.clip(digits, 0, 1) * 255 + 0.5).astype(int)
  # The ten all-r grids decode to ten different pictures, so rows can be told apart.
  assert min(np.abs(digits[a] - digits[b]).max() for a in range(10) for b in range(a)) > 2
  for r in range(10):
    for c in range(2):
      tile = grid[1 + 29 * r:29 * (r + 1), 1 + 29 * c:29 * (c + 1)]
      assert np.abs(tile - digits[r]).max() <= 1, (r, c)  # uint8 rounding at most
  # The scored samples ask for every class equally often and are checked against it.
  out = task.report(state, ctx)
  assert 0.0 <= out["label_accuracy"] <= 1.0
  assert sum(out["class_histogram"]) == pytest.approx(1.0)


@pytest.mark.slow  # another ~35 s of compilation on a quiet 2-core machine
def test_masked_class_conditional_prior_runs(tokenizer_dir, classifier_dir, tmp_path):
  config = _tiny_prior(tokenizer_dir, classifier_dir, order="masked", class_conditional=True,
                       num_steps=40, maskgit_steps=4)
  summary = prior.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(summary["test/masked_bits_per_token"])
  assert summary["test/masked_bits_per_token"] < summary["uniform_bits_per_token"]
  assert max(p.stat().st_size for p in (tmp_path / "images").glob("samples*.png")) > 100
  assert summary["sampling"]["maskgit_steps"] == 4
  assert summary["test/raster_bits_per_token"] < summary["uniform_bits_per_token"]
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["order"] == "masked"
  assert (saved["num_steps"], saved["lr_schedule"]) == (40, "cosine")


def test_masked_prior_raster_likelihood_reads_the_model_one_position_at_a_time(tokenizer_dir,
                                                                               tmp_path):
  # The masked prior's test/raster_bits_per_token: its "raster" evaluation,
  # checked against a plain loop that reveals the tokens left to right.
  config = _tiny_prior(tokenizer_dir, order="masked", class_conditional=True, num_layers=1,
                       width=16, num_heads=2)
  tok = tokenizer.load_tokenizer(tokenizer_dir)
  task = prior.make_task(config, harness.DataInfo(tok.image_shape, 1, 1))
  tokens = np.asarray(prior.load_tokens(config, str(tmp_path))[1]["tokens"][:3])
  batch = {"tokens": jnp.asarray(tokens), "label": jnp.array([3, 1, 4])}
  state = jax.jit(task.init)(jax.random.key(0), batch)
  # O(1) weights: at N(0, 0.02) every factor is close to 1/K whatever the order
  state = state.replace(params=jax.tree.map(
      lambda x: x + 0.5 * jax.random.normal(jax.random.key(1), x.shape), state.params))
  got = np.asarray(jax.jit(task.evals["raster"].step)(state, batch)["raster_nats"])
  model = prior.build_model(config, tok)
  apply = jax.jit(model.apply)
  visible, want = np.full_like(tokens, model.mask_id), np.zeros(len(tokens))
  for i in range(tokens.shape[1]):
    logits = np.asarray(apply(state.params, jnp.asarray(visible), batch["label"]), np.float64)
    logits = logits[:, i] - logits[:, i].max(-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want -= log_p[np.arange(len(tokens)), tokens[:, i]]
    visible[:, i] = tokens[:, i]
  np.testing.assert_allclose(got, want, rtol=1e-4)
  assert abs(want.mean() / tokens.shape[1] - math.log(tok.vocab_size)) > 0.05


def _one_line_error(config, workdir, match):
  with pytest.raises(ConfigError, match=match) as e:
    prior.train_and_evaluate(config, str(workdir))
  assert "\n" not in str(e.value)
  return str(e.value)


def test_bad_sampling_and_model_keys_name_the_key(tokenizer_dir, tmp_path):
  for key, bad in (("order", "sideways"), ("top_k", -1), ("top_p", 0.0),
                   ("top_p", 1.5), ("top_p", float("nan")), ("temperature", 0.0),
                   ("temperature", -1.0), ("width", 30), ("lr_schedule", "linear"),
                   ("final_lr_fraction", 1.5)):
    _one_line_error(_tiny_prior(tokenizer_dir, **{key: bad}), tmp_path / "w",
                    f"config.{key} must be")


def test_tokenizer_that_is_not_a_finished_tokenizer_run(tokenizer_dir, trained_prior, tmp_path):
  def check(path, why):
    text = _one_line_error(_tiny_prior(str(path)), tmp_path / "w", "config.tokenizer must be")
    assert why in text, text

  check("", "it is empty")
  check(tmp_path / "missing", "does not exist")
  (tmp_path / "empty").mkdir()
  check(tmp_path / "empty", "has no config.json")
  (tmp_path / "gan").mkdir()
  (tmp_path / "gan" / "config.json").write_text(gan.get_config().to_json())
  check(tmp_path / "gan", "another trainer")
  check(trained_prior[1], "is a train.prior run")
  (tmp_path / "untrained").mkdir()
  shutil.copy(os.path.join(tokenizer_dir, "config.json"), tmp_path / "untrained")
  check(tmp_path / "untrained", "has no checkpoint")
  shutil.copytree(tokenizer_dir, tmp_path / "unfinished")
  cfg = json.loads((tmp_path / "unfinished" / "config.json").read_text())
  (tmp_path / "unfinished" / "config.json").write_text(json.dumps({**cfg, "num_steps": 40}))
  check(tmp_path / "unfinished", "step 20 of num_steps=40")


def test_prior_dataset_must_be_the_tokenizers(tokenizer_dir, tmp_path):
  _one_line_error(_tiny_prior(tokenizer_dir, dataset="tfds:cifar10"), tmp_path / "w",
                  r"config.dataset must be '' \(the tokenizer's data\) or the tokenizer's own "
                  r"'digits' \(28x28x1 images\), got 'tfds:cifar10'")


def test_changed_config_on_resume_is_one_line(trained_prior, tokenizer_dir, tmp_path):
  config, workdir, _ = trained_prior
  copy = tmp_path / "prior"
  shutil.copytree(workdir, copy)
  for key, value in (("width", 64), ("order", "masked"), ("num_layers", 1)):
    text = _one_line_error(_tiny_prior(tokenizer_dir, **{key: value}), copy,
                           f"cannot resume or evaluate .* with config.{key}=")
    assert f"--config.{key}={config[key]!r}" in text
  # The same tokenizer run at another path: not the tokens this prior was trained on.
  shutil.copytree(tokenizer_dir, tmp_path / "tokenizer2")
  text = _one_line_error(_tiny_prior(str(tmp_path / "tokenizer2")), copy,
                         "cannot resume .* with config.tokenizer=")
  assert os.path.realpath(tokenizer_dir) in text
  # Sampling keys may change (eval_only with another temperature is the point).
  config = _tiny_prior(tokenizer_dir, top_k=8)
  assert prior.load_tokens(config, str(copy))[0]["tokens"].shape[1] == 49


def test_tokenizer_change_names_both_image_sizes(tokenizer_dir, tmp_path):
  old = tokenizer.load_tokenizer(tokenizer_dir).record
  assert tokenizer.tokenizer_change(old, dict(old), "w") is None
  other = {**old, "image_shape": [32, 32, 3], "seq_len": 64, "tokenizer": "/runs/cifar"}
  text = tokenizer.tokenizer_change(old, other, "w")
  assert "32x32x3 images as 64 tokens over 16 codes" in text
  assert "28x28x1 images as 49 tokens over 16 codes" in text and "\n" not in text
  retrained = {**old, "fingerprint": "0" * 16}
  assert "changed since the prior in w was trained on it" in tokenizer.tokenizer_change(
      old, retrained, "w")


def test_cli_bad_tokenizer_is_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "train.prior", f"--workdir={tmp_path / 'w'}",
       f"--config.tokenizer={tmp_path / 'nothing'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 1
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert lines == [f"error: config.tokenizer must be the workdir of a finished train.vqvae or "
                   f"train.dvae run; {str(tmp_path / 'nothing')!r} does not exist."]


@pytest.mark.slow  # a dVAE run and a prior: about a minute of compilation
def test_prior_on_dvae_tokens(classifier_dir, tmp_path):
  from train import dvae

  cfg = dvae.get_config()
  cfg.update({
      "model": "dvae", "likelihood": "logit_laplace", "pixel_format": "unit",
      "num_steps": 10, "log_every": 5, "checkpoint_every": 10, "data_limit": 256,
      "batch_size": 32, "eval_batch_size": 64, "num_images": 16, "num_codes": 8,
      "code_dim": 4, "channels": (8, 8), "res_hidden": 8, "iwae_samples": 4,
      "iwae_chunk": 2, "quiet": True})
  harness.train_and_evaluate(cfg, str(tmp_path / "dvae"), dvae.make_task)
  config = _tiny_prior(str(tmp_path / "dvae"), classifier_dir, num_steps=20)
  summary = prior.train_and_evaluate(config, str(tmp_path / "prior"))
  assert (summary["seq_len"], summary["vocab_size"]) == (49, 8)
  assert np.isfinite(summary["test/bits_per_token"])
  assert np.isfinite(summary["frechet_classifier_distance"])
  # The two-stage bound: with the dVAE's own (uniform) prior the same estimator is the dVAE
  # run's own test -ELBO (there with the analytic KL and one code draw, here
  # with ten draws and log q): within Monte Carlo noise, far below the
  # N log K = 102 nats a missing prior term would shift it by. (Whether the
  # learned prior tightens it depends on q: this 10-step q is nearly uniform,
  # so its draws are not the argmax codes the prior was fitted to.)
  with open(os.path.join(tmp_path / "dvae", "summary.json")) as f:
    own = json.load(f)["test/neg_elbo"]
  assert abs(summary["test/tokenizer_prior_neg_elbo"] - own) < 0.05 * abs(own)
  assert np.isfinite(summary["test/two_stage_neg_elbo"])
  assert "tokenizer/test_mse" not in summary
  tok = tokenizer.load_tokenizer(str(tmp_path / "dvae"))
  images = np.asarray(tok.decode(np.zeros((2, 49), np.int32)))
  assert images.shape == (2, 28, 28, 1) and (images >= 0).all() and (images <= 1).all()


@pytest.mark.slow  # a categorical VAE run and a prior: about 30 s
def test_prior_on_categorical_vae_latents(classifier_dir, tmp_path):
  from train import dvae

  cfg = dvae.get_config()  # model="categorical": 20 variables x 10 classes, an MLP
  cfg.update({"num_steps": 20, "log_every": 10, "checkpoint_every": 20, "data_limit": 256,
              "batch_size": 32, "eval_batch_size": 64, "num_images": 16, "hidden": (32,),
              "iwae_samples": 2, "iwae_chunk": 2, "eval_every": 0, "quiet": True})
  harness.train_and_evaluate(cfg, str(tmp_path / "cat"), dvae.make_task)
  config = _tiny_prior(str(tmp_path / "cat"), classifier_dir, num_steps=40, num_layers=1)
  summary = prior.train_and_evaluate(config, str(tmp_path / "prior"))
  assert (summary["seq_len"], summary["vocab_size"]) == (20, 10)  # a 20-token sequence
  assert summary["test/bits_per_token"] < summary["uniform_bits_per_token"]


def test_training_defaults_follow_the_order_and_a_resumed_run_keeps_its_own(tmp_path):
  def resolved(workdir, **over):
    c = prior.get_config()
    c.update(over)
    prior.resolve_defaults(c, None if workdir is None else str(workdir))
    return c.num_steps, c.learning_rate, c.lr_schedule

  fresh = tmp_path / "fresh"
  assert resolved(fresh) == (2000, 3e-4, "constant")
  assert resolved(fresh, order="masked") == (8000, 1e-3, "cosine")
  assert resolved(None, order="masked") == (8000, 1e-3, "cosine")
  assert resolved(fresh, order="masked", num_steps=50, lr_schedule="constant") == (
      50, 1e-3, "constant")
  # A run's own config.json wins over the order's defaults, and a run from
  # before lr_schedule existed had a constant rate (its optimizer state has no
  # schedule count, so "cosine" would not restore it).
  old = tmp_path / "old"
  old.mkdir()
  (old / "config.json").write_text(json.dumps(
      {"order": "masked", "num_steps": 2000, "learning_rate": 3e-4}))
  assert resolved(old, order="masked") == (2000, 3e-4, "constant")
  assert resolved(old, order="masked", num_steps=4000) == (4000, 3e-4, "constant")
  # Another order in the saved run: its values are not this order's (the
  # model-key check refuses the resume later, naming config.order).
  assert resolved(old) == (2000, 3e-4, "constant")
  (old / "config.json").write_text(json.dumps(
      {"order": "autoregressive", "num_steps": 500, "learning_rate": 1e-2,
       "lr_schedule": "cosine"}))
  assert resolved(old, order="masked") == (8000, 1e-3, "cosine")
  assert resolved(old) == (500, 1e-2, "cosine")
  with pytest.raises(ConfigError, match="config.order must be"):
    resolved(fresh, order="sideways")
