"""train.prior end to end: a tiny VQ-VAE run -> its tokens -> a prior -> samples."""

import json

import jax
import numpy as np
import pytest
from tests_support import tiny_vqvae_config

from dgmjax.errors import ConfigError
from train import harness, prior, vqvae


def _tiny_prior(tokenizer, **over):
  c = prior.get_config()
  c.update({
      "tokenizer": tokenizer, "num_steps": 80, "batch_size": 32, "eval_batch_size": 64,
      "log_every": 20, "checkpoint_every": 40, "num_layers": 2, "width": 32,
      "num_heads": 4, "num_samples": 8, "learning_rate": 3e-3, "quiet": True, **over})
  return c


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("vqvae")
  harness.train_and_evaluate(tiny_vqvae_config(num_steps=20, checkpoint_every=20), str(path), vqvae.make_task)
  return str(path)


def test_autoregressive_prior_learns_the_tokens_and_samples(tokenizer_dir, tmp_path):
  config = _tiny_prior(tokenizer_dir, top_k=8)
  summary = prior.train_and_evaluate(config, str(tmp_path))
  tok = prior.load_tokenizer(tokenizer_dir)
  assert (summary["seq_len"], summary["vocab_size"]) == (49, 16)  # 28/4 squared, K = 16
  # Better than the uniform code, log2 K bits: the prior learned something.
  assert summary["test/bits_per_token"] < summary["uniform_bits_per_token"] - 0.3
  # The cached tokens are the tokenizer's own codes of its test images.
  with np.load(tmp_path / "tokens.npz") as z:
    cached = z["test_tokens"]
  x = harness.formatted({"image": tok.splits["test"]["image"][:5]}, tok.config.pixel_format)
  np.testing.assert_array_equal(cached[:5], np.asarray(tok.encode(x["image"])))
  assert max(p.stat().st_size for p in (tmp_path / "images").glob("samples*.png")) > 100
  # The samples the run decoded use only the top-8 codes of each step: check
  # the sampler directly with the restored prior.
  example = {k: v[:4] for k, v in prior.load_tokens(config, str(tmp_path))[1].items()}
  task = prior.make_task(config, harness.DataInfo(tok.image_shape, 1, 1))
  state, step = harness.restore_state(str(tmp_path), task, config, example)
  assert step == 80
  model = prior.build_model(config, tok)
  seqs = np.asarray(prior.sample(config, model, state.params, jax.random.key(0)))
  assert seqs.shape == (8, 49) and ((seqs >= 0) & (seqs < 16)).all()
  logits = np.asarray(jax.jit(model.apply)(state.params, seqs))
  rank = (logits > np.take_along_axis(logits, seqs[..., None], -1)).sum(-1)
  assert (rank < 8).all()  # every drawn token was among the 8 most likely


@pytest.mark.slow  # another ~35 s of compilation on a quiet 2-core machine
def test_masked_class_conditional_prior_runs(tokenizer_dir, tmp_path):
  config = _tiny_prior(tokenizer_dir, order="masked", class_conditional=True,
                       num_steps=40, maskgit_steps=4)
  summary = prior.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(summary["test/masked_bits_per_token"])
  assert summary["test/masked_bits_per_token"] < summary["uniform_bits_per_token"]
  assert max(p.stat().st_size for p in (tmp_path / "images").glob("samples*.png")) > 100
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["order"] == "masked"


def test_bad_prior_configs_name_the_key(tokenizer_dir, tmp_path):
  info = harness.DataInfo((28, 28, 1), 1, 1)
  with pytest.raises(ConfigError, match="config.tokenizer"):
    prior.make_task(_tiny_prior(str(tmp_path / "missing")), info)
  for key, bad in (("order", "sideways"), ("top_p", 0.0), ("temperature", 0.0),
                   ("width", 30)):
    with pytest.raises(ConfigError, match=f"config.{key} must be"):
      prior.make_task(_tiny_prior(tokenizer_dir, **{key: bad}), info)


@pytest.mark.slow  # a dVAE run and a prior: about a minute of compilation
def test_prior_on_dvae_tokens(tmp_path):
  from train import dvae

  cfg = dvae.get_config()
  cfg.update({
      "model": "dvae", "likelihood": "logit_laplace", "pixel_format": "unit",
      "num_steps": 10, "log_every": 5, "checkpoint_every": 10, "data_limit": 256,
      "batch_size": 32, "eval_batch_size": 64, "num_images": 16, "num_codes": 8,
      "code_dim": 4, "channels": (8, 8), "res_hidden": 8, "iwae_samples": 4,
      "iwae_chunk": 2, "quiet": True})
  harness.train_and_evaluate(cfg, str(tmp_path / "dvae"), dvae.make_task)
  config = _tiny_prior(str(tmp_path / "dvae"), num_steps=20)
  summary = prior.train_and_evaluate(config, str(tmp_path / "prior"))
  assert (summary["seq_len"], summary["vocab_size"]) == (49, 8)
  assert np.isfinite(summary["test/bits_per_token"])
  tok = prior.load_tokenizer(str(tmp_path / "dvae"))
  images = np.asarray(tok.decode(np.zeros((2, 49), np.int32)))
  assert images.shape == (2, 28, 28, 1) and (images >= 0).all() and (images <= 1).all()
