"""The harness's evaluation pipeline: named evaluations over named splits.

Properties: a mean evaluation of a vector per example (a class histogram)
equals the NumPy histogram of the split; a gathering evaluation returns every
example once, in split order; noise keyed by ``batch["index"]`` makes results
independent of the evaluation batch size; the report sees exactly those
results and its pictures reach images/ and TensorBoard; summary keys follow
the split prefixes; an unknown split or two evaluations reporting one key are
refused.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dgmjax.eval import example_keys
from train import harness
from train.state import create_train_state

CONFIG = {"num_steps": 2, "log_every": 1, "checkpoint_every": 2, "data_limit": 40,
          "batch_size": 8, "quiet": True}


def _config(**over):
  c = harness.base_config()
  c.update({**CONFIG, **over})
  return c


def _task(seen: dict, evals=None):
  def init(key, batch):
    return create_train_state({"w": jnp.zeros(())}, optax.sgd(0.1), key)

  def train_step(state, batch):
    grads = {"w": jnp.mean(batch["image"])}
    return state.apply_gradients(grads=grads), {"train/loss": state.params["w"]}

  def histogram(state, batch):
    return {"labels": jax.nn.one_hot(batch["label"], 10), "brightness": jnp.mean(
        batch["image"], axis=(1, 2, 3))}

  def noisy(state, batch):
    keys = example_keys(jax.random.key(3), batch["index"])
    noise = jax.vmap(lambda k: jax.random.normal(k, ()))(keys)
    return {"noisy": jnp.mean(batch["image"], axis=(1, 2, 3)) + noise}

  def every(state, batch):
    return {"index": batch["index"], "label": batch["label"]}

  def report(state, ctx):
    seen.update(ctx.results)
    ctx.image("flat", np.full((6, 9, 3), 200, np.uint8))
    return {"reported": 1.0}

  default = {"hist": harness.Eval(histogram, splits=("test", "train"), during_training=True),
             "noisy": harness.Eval(noisy),
             "all": harness.Eval(every, splits=("train",), gather=True)}
  return harness.Task(init=init, train_step=train_step, evals=default if evals is None else evals,
                      report=report)


def test_means_gathers_and_report(tmp_path):
  seen = {}
  config = _config(eval_batch_size=16, eval_every=1)
  summary = harness.train_and_evaluate(config, str(tmp_path), lambda c, i: _task(seen))
  train, test, _ = harness.load_data(config)
  for split, arrays in (("test", test), ("train", train)):
    counts = np.bincount(arrays["label"], minlength=10) / len(arrays["label"])
    np.testing.assert_allclose(seen["hist"][split]["labels"], counts, rtol=1e-6)
    x = harness.formatted(arrays, config.pixel_format, split)["image"]
    want = float(np.mean(x.reshape(len(x), -1).mean(1)))
    np.testing.assert_allclose(summary[f"{harness.SPLIT_PREFIX[split]}/brightness"], want,
                               rtol=1e-5)
  assert "test/labels" not in summary  # vectors stay in the results, not the summary
  gathered = seen["all"]["train"]
  np.testing.assert_array_equal(gathered["index"], np.arange(len(train["label"])))
  np.testing.assert_array_equal(gathered["label"], train["label"])
  assert "all" not in summary and summary["reported"] == 1.0
  assert (tmp_path / "images" / "flat.png").exists()
  rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert sum("test/brightness" in r for r in rows) == 2  # during training, every step


def test_index_keyed_noise_does_not_depend_on_the_batch_size(tmp_path):
  out = []
  for bs in (8, 24):
    seen = {}
    harness.train_and_evaluate(_config(eval_batch_size=bs), str(tmp_path / str(bs)),
                               lambda c, i, seen=seen: _task(seen))
    out.append(seen["noisy"]["test"]["noisy"])
  np.testing.assert_allclose(out[0], out[1], atol=1e-6)  # summation order only


def test_unknown_split_and_duplicate_keys_are_refused(tmp_path):
  step = lambda state, batch: {"v": jnp.zeros(batch["label"].shape)}
  with pytest.raises(ValueError, match="unknown splits"):
    harness.train_and_evaluate(_config(), str(tmp_path / "a"), lambda c, i: _task(
        {}, {"x": harness.Eval(step, splits=("validation",))}))
  with pytest.raises(ValueError, match="test/v"):
    harness.train_and_evaluate(_config(), str(tmp_path / "b"), lambda c, i: _task(
        {}, {"x": harness.Eval(step), "y": harness.Eval(step)}))


@pytest.mark.parametrize("key,value,what", [
    ("n", 1.5, "an int >= 0"), ("n", True, "an int >= 0"), ("lr", float("nan"), "finite"),
    ("lr", float("inf"), "finite"), ("lr", 0.0, "finite"), ("kind", "c", "one of"),
    ("widths", (4, 0), "non-empty tuple"),
])
def test_check_config_names_the_key(key, value, what):
  import ml_collections

  good = {"n": 3, "lr": 0.1, "kind": "a", "widths": (4, 4)}
  c = ml_collections.ConfigDict({**good, key: value})
  with pytest.raises(harness.ConfigError, match=f"config.{key} must be .*{what}"):
    harness.check_config(c, ints={"n": 0}, ranges={"lr": "(0, inf)"},
                         choices={"kind": ("a", "b")}, int_tuples=("widths",))
  harness.check_config(ml_collections.ConfigDict(good), ints={"n": 0},
                       ranges={"lr": "(0, inf)"}, choices={"kind": ("a", "b")},
                       int_tuples=("widths",))
