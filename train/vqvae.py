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
from dgmjax.nn.conv import ConvDecoder, ConvEncoder
from dgmjax.parallel import as_local, mean_over
from train import harness
from train.state import create_train_state, step_key


def get_config() -> ml_collections.ConfigDict:
  c = harness.base_config()
  c.num_steps = 3000
  c.batch_size = 128
  c.learning_rate = 2e-3
  c.checkpoint_every = 1000
  c.log_every = 100
  c.num_codes = 512  # K
  c.code_dim = 32  # D
  c.beta = 0.25  # commitment weight
  c.codebook = "ema"  # "ema" or "loss"
  c.ema_decay = 0.99
  c.dead_code_threshold = 0.01  # restart codes whose EMA usage falls below this
  c.kmeans_init = False
  c.channels = (32, 64)
  c.num_res_blocks = 2
  c.res_hidden = 32
  return c


def _models(config, channels_out: int):
  enc = ConvEncoder(tuple(config.channels), config.num_res_blocks, config.res_hidden,
                    config.code_dim)
  dec = ConvDecoder(tuple(reversed(config.channels)), config.num_res_blocks,
                    config.res_hidden, channels_out)
  return enc, dec


def make_task(config, info: harness.DataInfo) -> harness.Task:
  if config.codebook not in ("ema", "loss"):
    raise ConfigError(f"config.codebook must be 'ema' or 'loss', got {config.codebook!r}.")
  if config.num_codes < 2:
    raise ConfigError(f"config.num_codes must be >= 2, got {config.num_codes}.")
  if config.pixel_format not in ("unit", "symmetric"):
    raise ConfigError("config.pixel_format must be 'unit' or 'symmetric' for the VQ-VAE "
                      f"(MSE decoder), got {config.pixel_format!r}.")
  h, w, c = info.image_shape
  if h % 4 or w % 4:
    raise ConfigError(f"image height and width must be multiples of 4, got {info.image_shape}.")
  enc, dec = _models(config, c)
  use_ema = config.codebook == "ema"
  tx = optax.adam(config.learning_rate)

  def check_batch(batch):
    x = batch["image"]
    if x.ndim != 4 or x.shape[1:] != info.image_shape:
      raise ConfigError(f"images must have shape (B, {h}, {w}, {c}), got {x.shape}.")

  def to_unit(x):
    return (x + 1.0) / 2.0 if config.pixel_format == "symmetric" else x

  def init(key, batch):
    k_enc, k_dec, k_code, k_state = jax.random.split(key, 4)
    x = jnp.asarray(batch["image"], jnp.float32)
    p_enc = enc.init(k_enc, x)
    z = enc.apply(p_enc, x)
    p_dec = dec.init(k_dec, z)
    flat = z.reshape(-1, config.code_dim)
    if config.kmeans_init:
      codebook = vq.kmeans_init(k_code, flat, config.num_codes)
    else:
      codebook = flat[jax.random.randint(k_code, (config.num_codes,), 0, flat.shape[0])]
    params = {"encoder": p_enc, "decoder": p_dec}
    extra = None
    if use_ema:
      extra = vq.ema_init(codebook)
    else:
      params["codebook"] = codebook
    return create_train_state(params, tx, k_state, extra=extra)

  def forward(params, codebook, x):
    z_e = enc.apply(params["encoder"], x)
    z_q, idx = vq.quantize(z_e, codebook)
    x_rec = dec.apply(params["decoder"], vq.straight_through(z_e, z_q))
    return z_e, z_q, idx, x_rec

  def codebook_of(state):
    return state.extra.codebook if use_ema else state.params["codebook"]

  def train_step(state, batch, axis_name=None):
    x = batch["image"]

    def loss_fn(params):
      z_e, z_q, idx, x_rec = forward(params, codebook_of(state) if use_ema else params["codebook"], x)
      rec = jnp.mean((x_rec - x) ** 2)
      if use_ema:
        reg = config.beta * jnp.mean(vq.commitment_loss(z_e, z_q))
      else:
        reg = jnp.mean(vq.vq_loss(z_e, z_q, beta=config.beta))
      return rec + reg, (rec, z_e, idx)

    (loss, (rec, z_e, idx)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        as_local(state.params, axis_name))
    grads, loss, rec = mean_over((grads, loss, rec), axis_name)
    new = state.apply_gradients(grads=grads)
    flat_z = jax.lax.stop_gradient(z_e).reshape(-1, config.code_dim)
    flat_i = idx.reshape(-1)
    counts = vq.code_histogram(flat_i, config.num_codes, axis_name=axis_name)
    if use_ema:
      ema = vq.ema_update(state.extra, flat_z, flat_i, decay=config.ema_decay,
                          axis_name=axis_name)
      ema, restarted = vq.restart_dead_codes_ema(
          step_key(state), ema, flat_z, threshold=config.dead_code_threshold,
          axis_name=axis_name)
      new = new.replace(extra=ema)
    else:
      restarted = jnp.zeros((), jnp.int32)
    metrics = {
        "train/loss": loss,
        "train/mse": rec,
        "train/perplexity": vq.perplexity(counts),
        "train/codes_used": vq.codes_used(counts),
        "train/restarted": jnp.asarray(restarted, jnp.float32),
    }
    return new, metrics

  def eval_step(state, batch):
    x = batch["image"]
    _, _, idx, x_rec = forward(state.params, codebook_of(state), x)
    err = jnp.mean((to_unit(x_rec) - to_unit(x)) ** 2, axis=(1, 2, 3))
    var = jnp.var(to_unit(x), axis=(1, 2, 3))
    return {"mse": err, "pixel_var": var}

  def images(state, batch):
    x = batch["image"]
    x_rec = forward(state.params, codebook_of(state), x)[3]
    from train.images import side_by_side

    return {"reconstructions": side_by_side(
        np.asarray(to_unit(x)), np.clip(np.asarray(to_unit(x_rec)), 0, 1))}

  def report(state, ctx: harness.Context):
    test = harness.formatted({"image": ctx.info.dataset.test_images}, config.pixel_format, 0)
    indices = encode(state, test["image"])
    counts = np.bincount(indices.ravel(), minlength=config.num_codes).astype(np.float64)
    p = counts / counts.sum()
    nz = p[p > 0]
    perplexity = float(np.exp(-(nz * np.log(nz)).sum()))
    out = {"test/perplexity": perplexity, "test/codes_used": float((counts > 0).mean()),
           "num_codes": config.num_codes}
    ev = ctx.evaluate(state, test)
    out["test/nmse"] = ev["mse"] / ev["pixel_var"]
    if ctx.is_main:
      _save_histogram(counts, f"{ctx.workdir}/images/code_usage.png")
    return out

  @jax.jit
  def _encode(state, x):
    return vq.nearest_code(enc.apply(state.params["encoder"], x), codebook_of(state))

  def encode(state, images):
    """Images (N, H, W, C) in the model's pixel format -> code indices (N, h, w)."""
    return np.concatenate([np.asarray(_encode(state, images[i : i + 500]))
                           for i in range(0, len(images), 500)])

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


if __name__ == "__main__":
  harness.run_cli("vqvae", get_config, make_task)
