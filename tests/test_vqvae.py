"""train.vqvae end to end on a tiny config, and its input checks."""

import json

import numpy as np
import pytest
from tests_support import tiny_vqvae_config

from dgmjax.errors import ConfigError
from train import harness, vqvae


def test_tiny_run_writes_everything_and_learns(tmp_path):
  config = tiny_vqvae_config(num_steps=60, image_every=30, eval_every=30)
  summary = harness.train_and_evaluate(config, str(tmp_path), vqvae.make_task)
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert on_disk["test/mse"] == summary["test/mse"]
  # NMSE is MSE over the per-image pixel variance; both measured on [0, 1].
  np.testing.assert_allclose(summary["test/nmse"], summary["test/mse"] / summary["test/pixel_var"])
  assert summary["test/mse"] < summary["test/pixel_var"]  # better than predicting the mean
  assert 1.0 <= summary["test/perplexity"] <= 16 and 0 < summary["test/codes_used"] <= 1
  for name in ("reconstructions_0000030.png", "reconstructions_0000060.png", "code_usage.png"):
    assert (tmp_path / "images" / name).stat().st_size > 100
  rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  train_rows = [r for r in rows if "train/mse" in r]
  assert train_rows[-1]["train/mse"] < train_rows[0]["train/mse"]
  assert any("test/mse" in r for r in rows)  # periodic evaluation
  assert list((tmp_path / "tensorboard").iterdir())

  # A user loads the trained model and turns images into tokens and back.
  train, test, info = harness.load_data(config)
  example = harness.formatted({"image": test["image"][:8]}, config.pixel_format)
  state, step = harness.restore_state(str(tmp_path), vqvae.make_task(config, info), config, example)
  assert step == 60
  model = vqvae.build_model(config, 1)
  variables = {"params": state.params, "vq_ema": state.extra}
  tokens = model.apply(variables, example["image"], method="encode")
  images = model.apply(variables, tokens, method="decode_indices")
  recon = model.apply(variables, example["image"])[0]
  np.testing.assert_allclose(np.asarray(images), np.asarray(recon), rtol=1e-5, atol=1e-6)
  err = float(np.mean((np.asarray(images) - example["image"]) ** 2))
  assert err < 0.5 * float(np.var(example["image"]))


def test_wrong_images_fail_before_compiling():
  config = tiny_vqvae_config()
  with pytest.raises(ConfigError, match="multiples of 4"):
    vqvae.make_task(config, harness.DataInfo((30, 30, 1), 10, 10))
  with pytest.raises(ConfigError, match=r"\(B, 28, 28, 1\)"):
    harness.check_example({"image": np.zeros((4, 28, 28, 3), np.float32)},
                          harness.DataInfo((28, 28, 1), 10, 10))
  for key, bad in (("beta", -1.0), ("code_dim", 0), ("channels", (0, 0)),
                   ("beta", float("nan"))):
    with pytest.raises(ConfigError, match=f"config.{key} must be"):
      vqvae.make_task(tiny_vqvae_config(**{key: bad}), harness.DataInfo((28, 28, 1), 10, 10))
  with pytest.raises(ConfigError, match="pixel_format"):
    vqvae.make_task(tiny_vqvae_config(pixel_format="binary_dynamic"),
                    harness.DataInfo((28, 28, 1), 10, 10))
  with pytest.raises(ConfigError, match="ema_decay"):
    vqvae.make_task(tiny_vqvae_config(ema_decay=1.5), harness.DataInfo((28, 28, 1), 10, 10))


def test_quantizer_choice_reaches_the_model(tmp_path):
  # FSQ with levels (3, 3): 9 codes, no codebook statistics to keep.
  config = tiny_vqvae_config(quantizer="fsq", levels=(3, 3), code_dim=2, num_steps=4,
                             log_every=2, checkpoint_every=4, data_limit=64)
  summary = vqvae.train_and_evaluate(config, str(tmp_path))
  assert summary["num_codes"] == 9 and summary["quantizer"] == "fsq"
  assert 1.0 <= summary["test/perplexity"] <= 9.0
  assert 0 < summary["test/codes_used"] <= 1.0
  with pytest.raises(ConfigError, match="config.num_codes"):
    vqvae.make_task(tiny_vqvae_config(quantizer="lfq", num_codes=12),
                    harness.DataInfo((28, 28, 1), 10, 10))
  with pytest.raises(ConfigError, match="config.quantizer"):
    vqvae.make_task(tiny_vqvae_config(quantizer="gumbel"), harness.DataInfo((28, 28, 1), 10, 10))
