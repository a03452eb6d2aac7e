"""bench/generators.py: its wiring agrees with the trainers it reads.

The bench may use only the trainers' ``get_config``/``train_and_evaluate``
(tests/test_layering.py), so it rebuilds every model from ``dgmjax`` and the
run's config, and re-derives the test split's fixed binarization. These tests
compare each of those with the trainers' own code, check every family's
settings against its trainer's config (a typo would otherwise add a silent
new key), the Gaussian observation model against SciPy, and that a cached run
is reused only when its settings are the ones asked for. The end-to-end smoke
run is ``-m slow``.
"""

import dataclasses
import importlib.util
import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dgmjax.data import load_image_dataset, pixels
from train import avb, dvae, gan, harness, prior, vae, vqvae

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("bench_generators",
                                               os.path.join(ROOT, "bench", "generators.py"))
bg = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bg  # dataclasses look their module up there
_spec.loader.exec_module(bg)

SHAPE = (28, 28, 1)
TRAINERS = {"vae": vae, "dvae": dvae, "gan": gan, "avb": avb, "vqvae": vqvae, "prior": prior}


def test_binarization_is_the_one_every_trainer_evaluates_on():
  assert bg.EVAL_BINARIZATION_SEED == harness.EVAL_BINARIZATION_SEEDS
  ds = load_image_dataset("digits", limit=64)
  for split, images in (("test", ds.test_images), ("train", ds.train_images)):
    ours = pixels.static_binarization(images, seed=bg.EVAL_BINARIZATION_SEED[split])
    theirs = harness.formatted({"image": images}, "binary_dynamic", split)["image"]
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("smoke", [False, True], ids=["digits", "smoke"])
@pytest.mark.parametrize("family", bg.FAMILIES, ids=lambda f: f.name)
def test_family_settings_are_keys_of_the_trainer_and_valid(family, smoke, tmp_path):
  defaults = TRAINERS[family.trainer].get_config()
  unknown = sorted((set(family.overrides) | set(family.smoke)) - set(defaults))
  assert not unknown, f"not keys of train.{family.trainer}'s config: {unknown}"
  c = bg.family_config(family, smoke=smoke, tokenizer_dir=str(tmp_path),
                       classifier_dir=str(tmp_path))
  assert set(c) == set(defaults)  # nothing added
  harness.validate_config(c)
  info = harness.DataInfo(SHAPE, 100, 100)
  {"vae": lambda: vae.validate(c, SHAPE), "dvae": lambda: dvae.validate(c, SHAPE),
   "gan": lambda: gan.validate(c), "avb": lambda: avb.validate(c),
   "vqvae": lambda: vqvae.validate(c, info), "prior": lambda: prior.validate(c)}[family.trainer]()
  assert c.quiet and (family.trainer == "prior" or c.dataset == "digits")
  assert c.data_limit == (bg.SMOKE_DATA_LIMIT if smoke else 0)


def _fields_equal(a, b):
  return all(getattr(a, f.name) == getattr(b, f.name) for f in dataclasses.fields(a))


@pytest.mark.parametrize("smoke", [False, True], ids=["digits", "smoke"])
def test_models_are_the_trainers_models(smoke, tmp_path):
  for family in bg.FAMILIES:
    c = bg.family_config(family, smoke=smoke, tokenizer_dir=str(tmp_path))
    saved = json.loads(c.to_json())  # what the bench reads back: config.json
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    if family.trainer == "vae":
      assert bg.vae_model(saved) == vae.build_model(c, SHAPE)
    elif family.trainer == "dvae":
      assert bg.dvae_model(saved) == dvae.build_model(c, SHAPE)
    elif family.trainer == "avb":
      assert _fields_equal(bg.avb_model(saved), avb.build_model(c, SHAPE))
    elif family.trainer == "gan":
      assert bg.gan_generator(saved) == gan.build_models(c, harness.DataInfo(SHAPE, 1, 1))[0]
    elif family.trainer == "vqvae":
      assert bg.vqvae_model(saved) == vqvae.build_model(c, SHAPE[-1])
  # A changed width is seen (the comparison is not vacuous).
  c = bg.family_config(bg.BY_NAME["vae_flow"], smoke=smoke)
  other = dict(json.loads(c.to_json()), hidden=(7,))
  assert bg.vae_model(other) != vae.build_model(c, SHAPE)


def test_gaussian_observation_matches_scipy():
  rng = np.random.default_rng(0)
  mean = rng.uniform(size=(3, *SHAPE)).astype(np.float32)
  x = rng.uniform(size=(3, *SHAPE)).astype(np.float32)
  ll = bg.gaussian_observation(lambda z: jnp.asarray(mean) + 0 * z[:, :1, None, None], 0.2)
  got = np.asarray(ll(jnp.zeros((3, 4)), jnp.asarray(x)))
  want = stats.norm.logpdf(x, mean, 0.2).reshape(3, -1).sum(1)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bernoulli_noise_is_a_pmf_on_binary_images():
  noise = bg.BernoulliNoise((2, 2, 1))
  x = np.array([[0, 1, 1, 0], [0, 0.5, 1, 0]], np.float32).reshape(2, 2, 2, 1)
  lp = np.asarray(noise.log_prob(jnp.asarray(x)))
  np.testing.assert_allclose(lp[0], -4 * math.log(2), rtol=1e-6)
  assert lp[1] == -np.inf
  # The 16 binary images carry all the mass.
  grid = np.array([[int(b) for b in f"{i:04b}"] for i in range(16)], np.float32)
  total = np.exp(np.asarray(noise.log_prob(jnp.asarray(grid.reshape(16, 2, 2, 1))))).sum()
  np.testing.assert_allclose(total, 1.0, rtol=1e-6)
  s = np.asarray(noise.sample(jax.random.key(0), 4000))
  assert set(np.unique(s)) == {0.0, 1.0}
  assert abs(s.mean() - 0.5) < 0.02


def _fake_run(workdir, config, step):
  os.makedirs(workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json())
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump({"step": step}, f)


def test_a_cached_run_is_reused_only_with_the_same_settings(tmp_path, monkeypatch):
  family = bg.BY_NAME["vae_gaussian"]
  config = bg.family_config(family, smoke=True)
  other = bg.family_config(family, smoke=True)
  other.latent_dim = 3
  trained = []
  monkeypatch.setattr(bg, "_trainer", lambda name: type(
      "T", (), {"train_and_evaluate": staticmethod(lambda c, w: trained.append(w))}))
  _fake_run(str(tmp_path / "done"), config, config.num_steps)
  messages = []
  bg.ensure_trained(family, str(tmp_path / "done"), config, messages.append)
  assert not trained and "reusing" in messages[-1]
  _fake_run(str(tmp_path / "half"), config, config.num_steps // 2)  # resumed, not reused
  bg.ensure_trained(family, str(tmp_path / "half"), config, messages.append)
  assert trained == [str(tmp_path / "half")]
  with pytest.raises(SystemExit, match=r"latent_dim=4 \(wanted 3\)"):
    bg.ensure_trained(family, str(tmp_path / "done"), other, messages.append)
  with pytest.raises(SystemExit, match="family=path"):
    bg._parse_workdirs(["vae_flow"])
  with pytest.raises(SystemExit, match="unknown family 'vae'"):
    bg._parse_workdirs(["vae=/x"])


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path, capsys):
  cache = str(tmp_path / "cache")
  argv = ["--smoke", "--cache", cache, "--only", "vae_gaussian", "p1_small", "p1_large", "p2",
          "--p2-base", "vae_gaussian", "--ais"]
  bg.main(argv)
  out = json.load(open(os.path.join(cache, "generators.json")))
  rows = {r["name"]: r for r in out["results"]}
  assert list(rows) == ["p1_small", "p1_large", "vae_gaussian", "p2"]
  assert rows["vae_gaussian"]["ais"]["kind"] == "binary"
  # p2's mixture is within log 100 of its VAE's bound on average (and above it − log 100).
  assert rows["p2"]["log_lik"] >= rows["vae_gaussian"]["log_lik"] - math.log(100) - 1.0
  # The lecture's p1: the smaller kernel has the worse likelihood.
  assert rows["p1_small"]["log_lik"] < rows["p1_large"]["log_lik"]
  assert os.path.exists(os.path.join(cache, "generators_samples.png"))
  capsys.readouterr()
  bg.main(argv)  # the finished run is reused, not retrained, and so is its AIS result
  err = capsys.readouterr().err
  assert "reusing the finished run" in err and "reusing its AIS result" in err
  again = {r["name"]: r for r in json.load(open(os.path.join(cache, "generators.json")))["results"]}
  assert again["vae_gaussian"]["ais"]["per_example"] == rows["vae_gaussian"]["ais"]["per_example"]


def test_stored_ais_result_is_reused_only_with_the_same_settings(tmp_path):
  path = str(tmp_path / "vae.json")
  settings = {"source": "runs/vae (step 10)", "indices": [0, 4], "steps": 5, "chains": 2,
              "batch": 2, "seed": 0}
  assert bg._read_ais(path, settings) is None  # nothing stored
  result = {"mean": -90.0, "per_example": [-89.0, -91.0]}
  with open(path, "w") as f:
    json.dump({"settings": settings, "result": result}, f)
  assert bg._read_ais(path, settings) == result
  for key, value in (("steps", 6), ("indices", [0, 5]), ("source", "runs/vae (step 20)")):
    assert bg._read_ais(path, {**settings, key: value}) is None
  with open(path, "w") as f:
    f.write("{not json")
  assert bg._read_ais(path, settings) is None
