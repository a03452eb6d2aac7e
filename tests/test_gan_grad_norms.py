"""Vanishing gradients of the saturating generator loss (train/gan.py, ``both_grad_norms``).

The step logs ‖∇_θ L_G‖ of both generator losses at the same (G, D, z). Checked
here against an independent computation: the per-example Jacobian
``J_i = ∂l_i/∂θ`` of the discriminator's logits on the fakes (``jax.jacrev``),
combined in float64 NumPy with the chain-rule weights ``∂L/∂l_i`` of each loss,
``−σ(l_i)/B`` (minimax, ``log(1 − D)``) and ``−σ(−l_i)/B`` (non-saturating,
``−log D``). Then the lecture's claim itself: shifting D's output logit by −Δ
(D rejects the fakes harder) scales the minimax gradient by ≈ e^{−Δ} and leaves
the non-saturating one almost unchanged. Finally a short run logs both norms,
D's accuracy, and writes ``images/gen_grad_norms.png``.
"""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from dgmjax.errors import ConfigError
from train import gan
from train.state import step_key

TINY = {
    "num_steps": 20, "log_every": 5, "checkpoint_every": 20, "batch_size": 32,
    "eval_batch_size": 64, "g_features": (16, 16), "d_features": (16, 16),
    "image_every": 0, "quiet": True, "r1_weight": 0.0, "num_devices": 1,
}


def tiny_config(**over):
  c = gan.get_config()
  c.update({**TINY, **over})
  return c


def _setup(config):
  train, test, info = gan.load(config)
  task = gan.make_task(config, info)
  example = {k: v[: config.batch_size] for k, v in test.items()}
  state = jax.jit(task.init)(jax.random.key(0), example)
  batch = {"placeholder": np.zeros((config.batch_size, 1), np.float32)}
  return task, state, batch


def _shift_output_bias(disc_params, delta):
  """D's logit l(x) − delta for every x: the bias of its last Dense layer moves."""
  p = jax.tree.map(lambda x: x, disc_params)  # a copy of the nested dicts
  layers = p["params"]
  last = sorted(layers, key=lambda n: int(n.split("_")[-1]) if n.split("_")[-1].isdigit()
                else -1)[-1]
  assert layers[last]["bias"].shape == (1,), layers[last]["bias"].shape
  layers[last] = {**layers[last], "bias": layers[last]["bias"] - delta}
  return p


def _independent_norms(config, state):
  """Both norms from per-example Jacobians and NumPy chain-rule weights."""
  g, d = gan.build_models(config, None)
  b, dz = config.batch_size, gan.latent_dim(config)
  # The step's latents (simultaneous: G sees D_t, the state's discriminator).
  _, k_g = jax.random.split(step_key(state["gen"]))
  z = jax.random.normal(k_g, (b, dz))
  p_d = state["disc"].params
  logits_of = lambda p_g: d.apply(p_d, g.apply(p_g, z))  # (B,)
  logits = np.asarray(logits_of(state["gen"].params), np.float64)
  jac = jax.jacrev(logits_of)(state["gen"].params)  # leaves (B, *param shape)
  flat = np.concatenate([np.asarray(x, np.float64).reshape(b, -1) for x in jax.tree.leaves(jac)],
                        axis=1)  # (B, P)
  sig = lambda v: 1.0 / (1.0 + np.exp(-v))
  w_minimax = -sig(logits) / b
  w_non_saturating = -sig(-logits) / b
  return (float(np.linalg.norm(w_minimax @ flat)), float(np.linalg.norm(w_non_saturating @ flat)),
          logits)


@pytest.mark.parametrize("loss", ["non_saturating", "minimax"])
def test_logged_norms_match_per_example_jacobians(loss):
  config = tiny_config(simultaneous=True, generator_loss=loss)
  task, state, batch = _setup(config)
  _, metrics = jax.jit(task.train_step)(state, batch)
  mm, ns, _ = _independent_norms(config, state)
  assert mm > 0 and ns > 0
  np.testing.assert_allclose(float(metrics["train/g_grad_norm_minimax"]), mm, rtol=2e-4)
  np.testing.assert_allclose(float(metrics["train/g_grad_norm_non_saturating"]), ns, rtol=2e-4)
  # The configured loss's norm is the gradient that was applied.
  assert float(metrics["train/g_grad_norm"]) == float(metrics[f"train/g_grad_norm_{loss}"])


def test_minimax_gradient_vanishes_when_d_rejects_the_fakes():
  config = tiny_config(simultaneous=True)
  task, state, batch = _setup(config)
  step = jax.jit(task.train_step)
  out = {}
  for delta in (0.0, 8.0, 12.0):
    s = {**state, "disc": state["disc"].replace(
        params=_shift_output_bias(state["disc"].params, delta))}
    m = step(s, batch)[1]
    out[delta] = (float(m["train/g_grad_norm_minimax"]),
                  float(m["train/g_grad_norm_non_saturating"]), float(m["train/d_fake"]),
                  float(m["train/d_accuracy"]))
    mm, ns, _ = _independent_norms(config, s)
    np.testing.assert_allclose(out[delta][:2], (mm, ns), rtol=2e-4)
  # Saturated regime: D(G(z)) ≈ e^{l}, so log‖∇ minimax‖ drops by Δ, the other stays.
  drop = np.log(out[8.0][0]) - np.log(out[12.0][0])
  np.testing.assert_allclose(drop, 4.0, atol=0.01)
  assert out[12.0][0] < 1e-3 * out[12.0][1]
  np.testing.assert_allclose(out[12.0][1], out[8.0][1], rtol=1e-3)
  assert out[12.0][2] < 1e-4  # D(G(z)) → 0
  # D calls everything fake: right on every fake, wrong on every real.
  assert out[12.0][3] == 0.5
  assert out[0.0][0] > 1e2 * out[12.0][0]


def test_run_logs_both_norms_and_d_accuracy_and_draws_the_chart(tmp_path):
  config = tiny_config(generator_loss="minimax")
  gan.train_and_evaluate(config, str(tmp_path))
  rows = [json.loads(ln) for ln in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [5, 10, 15, 20]
  for r in rows:
    assert r["train/g_grad_norm_minimax"] > 0 and r["train/g_grad_norm_non_saturating"] > 0
    assert 0.0 <= r["train/d_accuracy"] <= 1.0
    # The window means of the applied gradient's norm under both names agree.
    np.testing.assert_allclose(r["train/g_grad_norm"], r["train/g_grad_norm_minimax"], rtol=1e-6)
  img = np.asarray(Image.open(tmp_path / "images" / "gen_grad_norms.png"))
  assert img.ndim == 3 and img.shape[0] > img.shape[1] / 2  # two charts stacked
  assert img.std() > 10  # not blank


def test_both_grad_norms_off_logs_only_the_applied_norm():
  config = tiny_config(both_grad_norms=False, num_steps=5)
  task, state, batch = _setup(config)
  m = jax.jit(task.train_step)(state, batch)[1]
  assert "train/g_grad_norm" in m and not any(k.startswith("train/g_grad_norm_") for k in m)
  # Training itself does not depend on the measurement.
  on = jax.jit(gan.make_task(tiny_config(num_steps=5), gan.load(config)[2]).train_step)
  s_on = on(state, batch)[0]
  s_off = jax.jit(task.train_step)(state, batch)[0]
  for a, b in zip(jax.tree.leaves(s_on["gen"].params), jax.tree.leaves(s_off["gen"].params),
                  strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_both_grad_norms_must_be_a_bool():
  c = tiny_config()
  with c.unlocked():
    del c["both_grad_norms"]
    c.both_grad_norms = "yes"
  with pytest.raises(ConfigError, match="both_grad_norms"):
    gan.validate(c)
