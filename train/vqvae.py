"""VQ-VAE (van den Oord et al. 2017): ``python -m train.vqvae``.

Lecture 7, "Deterministic variational posterior" and "Straight-through
gradient estimation": the encoder output z_e is replaced by its nearest code
z_q; the decoder sees ``z_e + sg(z_q - z_e)`` so gradients pass straight
through to the encoder. The codebook follows the encoder by EMA (default) or
by the codebook loss; the commitment loss (β = 0.25) keeps z_e near its code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dgmjax.errors import ConfigError
from dgmjax.losses import vq
from dgmjax.nn.vqvae import VQVAE
from dgmjax.parallel import as_local, mean_over
from train import harness
from train.images import side_by_side
from train.state import count_params, create_train_state, step_key


def get_config() -> ml_collections.ConfigDict:
  c = harness.base_config()
  c.num_steps = 2000
  c.batch_size = 128
  c.learning_rate = 2e-3
  c.checkpoint_every = 1000
  c.log_every = 100
  c.num_codes = 512  # K
  c.code_dim = 32  # D
  c.beta = 0.25  # commitment weight
  c.codebook = "ema"  # "ema" or "loss"
  c.ema_decay = 0.99
  c.dead_code_threshold = 1.0  # restart codes used less than once per batch (EMA count)
  c.kmeans_init = False
  c.cosine = False  # l2-normalised codes
  c.channels = (32, 64)
  c.num_res_blocks = 2
  c.res_hidden = 32
  return c


def build_model(config, out_channels: int, axis_name: str | None = None) -> VQVAE:
  return VQVAE(
      num_codes=config.num_codes, code_dim=config.code_dim, out_channels=out_channels,
      channels=tuple(config.channels), num_res_blocks=config.num_res_blocks,
      res_hidden=config.res_hidden, beta=config.beta, use_ema=config.codebook == "ema",
      decay=config.ema_decay, dead_code_threshold=config.dead_code_threshold,
      cosine=config.cosine, axis_name=axis_name)


def _validate(config, info: harness.DataInfo) -> None:
  if config.codebook not in ("ema", "loss"):
    raise ConfigError(f"config.codebook must be 'ema' or 'loss', got {config.codebook!r}.")
  if config.num_codes < 2:
    raise ConfigError(f"config.num_codes must be >= 2, got {config.num_codes}.")
  if not 0.0 < config.ema_decay < 1.0:
    raise ConfigError(f"config.ema_decay must be in (0, 1), got {config.ema_decay}.")
  if config.pixel_format not in ("unit", "symmetric"):
    raise ConfigError("config.pixel_format must be 'unit' or 'symmetric' for the VQ-VAE "
                      f"(MSE decoder), got {config.pixel_format!r}.")
  h, w, _ = info.image_shape
  if h % 4 or w % 4:
    raise ConfigError(f"image height and width must be multiples of 4, got {info.image_shape}.")


def make_task(config, info: harness.DataInfo) -> harness.Task:
  _validate(config, info)
  h, w, c = info.image_shape
  model = build_model(config, c)
  use_ema = config.codebook == "ema"
  tx = optax.adam(config.learning_rate)

  def check_batch(batch):
    x = batch["image"]
    if x.ndim != 4 or x.shape[1:] != info.image_shape:
      raise ConfigError(f"images must have shape (B, {h}, {w}, {c}), got {x.shape}.")

  def to_unit(x):
    return (x + 1.0) / 2.0 if config.pixel_format == "symmetric" else x

  def variables(state):
    return {"params": state.params, **({"vq_ema": state.extra} if use_ema else {})}

  def init(key, batch):
    k_init, k_code, k_state = jax.random.split(key, 3)
    x = jnp.asarray(batch["image"], jnp.float32)
    var = model.init(k_init, x)
    params, extra = var["params"], var.get("vq_ema")
    if config.kmeans_init:
      z_e = model.apply(var, x, method=lambda m, x: m.encoder(x))
      codebook, counts = vq.kmeans_init(k_code, z_e.reshape(-1, config.code_dim),
                                        config.num_codes, return_counts=True)
      if use_ema:
        extra = {"state": vq.ema_init(codebook, cluster_size=jnp.maximum(counts, 1.0))}
      else:
        params = {**params, "quantizer": {"codebook": codebook}}
    return create_train_state(params, tx, k_state, extra=extra)

  def train_step(state, batch, axis_name=None):
    x = batch["image"]
    net = build_model(config, c, axis_name) if axis_name else model

    def loss_fn(params):
      var = {"params": params, **({"vq_ema": state.extra} if use_ema else {})}
      (x_rec, out, _), updates = net.apply(
          var, x, train=True, mutable=["vq_ema"], rngs={"vq_restart": step_key(state)})
      rec = jnp.mean((x_rec - x) ** 2)
      loss = rec + jnp.mean(out.loss)
      return loss, (rec, out, updates)

    (loss, (rec, out, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        as_local(state.params, axis_name))
    grads, loss, rec = mean_over((grads, loss, rec), axis_name)
    new = state.apply_gradients(grads=grads)
    if use_ema:
      new = new.replace(extra=updates["vq_ema"])
    metrics = {
        "train/loss": loss,
        "train/mse": rec,
        "train/perplexity": out.perplexity,
        "train/codes_used": out.codes_used,
        "train/restarted": out.restarted.astype(jnp.float32),
    }
    return new, metrics

  def eval_step(state, batch):
    x = batch["image"]
    x_rec = model.apply(variables(state), x)[0]
    err = jnp.mean((to_unit(x_rec) - to_unit(x)) ** 2, axis=(1, 2, 3))
    var = jnp.var(to_unit(x), axis=(1, 2, 3))
    return {"mse": err, "pixel_var": var}

  def images(state, batch):
    x = batch["image"]
    x_rec = model.apply(variables(state), x)[0]
    return {"reconstructions": side_by_side(
        np.asarray(to_unit(x)), np.clip(np.asarray(to_unit(x_rec)), 0, 1))}

  encode_fn = jax.jit(lambda var, x: model.apply(var, x, method="encode"))

  def report(state, ctx: harness.Context):
    test = harness.formatted({"image": ctx.info.dataset.test_images}, config.pixel_format)
    indices = np.concatenate([np.asarray(encode_fn(variables(state), test["image"][i:i + 500]))
                              for i in range(0, len(test["image"]), 500)])
    counts = np.bincount(indices.ravel(), minlength=config.num_codes).astype(np.float64)
    p = counts / counts.sum()
    nz = p[p > 0]
    out = {"test/perplexity": float(np.exp(-(nz * np.log(nz)).sum())),
           "test/codes_used": float((counts > 0).mean()),
           "num_codes": config.num_codes,
           "num_params": count_params(state.params)}
    ev = ctx.evaluate(state, test)
    out["test/nmse"] = ev["mse"] / ev["pixel_var"]
    if ctx.is_main:
      _save_histogram(counts, f"{ctx.workdir}/images/code_usage.png")
    return out

  return harness.Task(init=init, train_step=train_step, eval_step=eval_step,
                      images=images, report=report, check_batch=check_batch)


def _save_histogram(counts: np.ndarray, path: str) -> None:
  """A bar picture of code usage sorted by frequency, drawn with NumPy."""
  from train.images import save_png

  k = len(counts)
  order = np.sort(counts)[::-1]
  height = 120
  bars = np.ones((height, k, 3), np.uint8) * 255
  top = order.max() if order.max() > 0 else 1.0
  for i, c in enumerate(order):
    h = int(round(c / top * (height - 1)))
    if h:
      bars[height - h :, i] = (40, 90, 200)
  save_png(np.repeat(bars, max(1, 1024 // k), axis=1), path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Programmatic entry point (tests, benchmarks, notebooks): train or resume, return the summary."""
  return harness.train_and_evaluate(config, workdir, make_task)


if __name__ == "__main__":
  harness.run_cli("vqvae", get_config, make_task)
