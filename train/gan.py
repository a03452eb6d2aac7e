"""GANs, JSD and mode collapse: ``python -m train.gan``.

Lecture 7, slides "Generative adversarial network (GAN) objective", "GAN
optimality", "GAN training" and "Mode collapse". The discriminator D is a
classifier of real vs generated samples; the generator G plays against it.
At the optimal D the game's value is ``2·JSD(π || p) − log 4``, so the D loss
gives a running JSD estimate, ``train/jsd = (log 4 − d_loss) / 2`` nats
(:func:`dgmjax.losses.gan.jsd_estimate`, in ``[0, log 2]`` up to noise).

Data (``config.dataset``):

* ``ring`` (default): 8 Gaussians on the unit circle, σ = 0.01; ``grid``: 25
  Gaussians on ``{−4, −2, 0, 2, 4}²``, σ = 0.05 (VEEGAN / PacGAN). Real
  samples are drawn fresh inside the step from the step key (an infinite data
  stream; the harness loader only serves a placeholder). Metrics: modes
  covered, % high-quality samples and KL of the mode histogram to uniform on
  2500 samples (:mod:`dgmjax.metrics.mode_coverage`), a scatter picture every
  ``image_every`` steps and an animated GIF of them.
* ``digits`` / ``tfds:<name>``: DCGAN-style conv nets on 28×28 images in
  ``[-1, 1]`` (``pixel_format=symmetric``). Metrics from a small classifier
  trained by the project (:mod:`dgmjax.metrics.classifier`): classes
  covered, KL of the predicted-class histogram to uniform, and a Fréchet
  distance on its features (not FID: another network).

One training step (``train_step``), in this order:

1. ``n_critic`` discriminator updates, as a ``lax.scan``; each draws fresh
   latents (and, for the 2-D data, fresh real samples) and takes one Adam
   step on ``E_π softplus(−l) + E_p softplus(l) + (γ/2)·E_π‖∇_x l‖²``
   (real targets ``real_label``, < 1 for one-sided label smoothing; the last
   term is the R1 penalty of Mescheder et al. 2018 with γ = ``r1_weight``,
   0 = off; ``train/d_loss`` logs the BCE alone). Image data: all critic
   updates of a step see the step's real batch, with fresh fakes each.
2. one generator update against the *updated* discriminator, with fresh
   latents: non-saturating ``softplus(−l)`` or minimax ``−softplus(l)``.

With ``simultaneous=True`` (needs ``n_critic=1``) both gradients are taken at
the same point ``(G_t, D_t)`` and applied together: the draws are those of
the alternating step, only the generator sees ``D_t`` instead of ``D_{t+1}``.
``pack > 1`` is PacGAN: D judges ``pack`` samples at once.

The state is ``{"gen": TrainState, "disc": TrainState}``, each player with
its own Adam and learning-rate schedule; both are checkpointed, and all
randomness comes from ``step_key(state["gen"])``, so a resumed run equals an
uninterrupted one exactly.

Examples::

  python -m train.gan                                  # ring, ≈ 2 min on a CPU
  python -m train.gan --config.dataset=grid --config.num_steps=40000 --workdir=workdir/gan_grid
  python -m train.gan --config.generator_loss=minimax --config.lr_schedule=constant \\
      --config.r1_weight=0                           # the plain minimax game
  python -m train.gan --config.dataset=digits --workdir=workdir/gan_digits \\
      --config.num_steps=6000 --config.batch_size=64 --config.base_channels=32 \\
      --config.learning_rate=5e-4
"""

from __future__ import annotations

import glob
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dgmjax.data import toy
from dgmjax.errors import ConfigError
from dgmjax.losses import gan as gan_losses
from dgmjax.metrics import classifier as clf
from dgmjax.metrics import mode_coverage as mc
from dgmjax.nn.gan import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    pack,
)
from dgmjax.parallel import as_local, mean_over
from train import harness
from train.state import create_train_state, step_key

TOY_DATASETS = ("ring", "grid")
GENERATOR_LOSSES = ("non_saturating", "minimax")
LR_SCHEDULES = ("cosine", "constant")
_SAMPLERS = {"ring": toy.sample_ring, "grid": toy.sample_grid}
_EXTENT = {"ring": 1.5, "grid": 5.0}  # half-width of the scatter pictures


def get_config() -> ml_collections.ConfigDict:
  c = harness.base_config()
  c.dataset = "ring"  # "ring", "grid", "digits" or "tfds:<name>"
  c.pixel_format = "symmetric"  # images: the generator ends in tanh
  c.num_steps = 30000  # ring; grid: 40000; digits (DCGAN): 6000 (see docs/gan.md)
  c.batch_size = 256  # samples per update (each critic update and the G update)
  c.learning_rate = 1e-3  # generator's peak Adam learning rate
  c.d_learning_rate = 0.0  # discriminator's; 0 = same as learning_rate
  c.lr_schedule = "cosine"  # "cosine" (decay to final_lr_fraction) or "constant"
  c.final_lr_fraction = 0.02
  c.adam_b1 = 0.5
  c.adam_b2 = 0.999
  c.generator_loss = "non_saturating"  # or "minimax" (saturating, the paper's game)
  c.real_label = 1.0  # < 1: one-sided label smoothing
  c.r1_weight = 0.1  # γ of the R1 penalty (γ/2)·E_π‖∇_x l(x)‖² on real data; 0 = off
  c.n_critic = 1  # discriminator updates per generator update
  c.simultaneous = False  # True: both players step at the same point
  c.pack = 1  # PacGAN packing degree
  c.latent_dim = 0  # 0: 2 for ring/grid, 64 for images
  c.g_features = (128, 128, 128)  # 2-D data: generator MLP
  c.d_features = (128, 128, 128)  # 2-D data: discriminator MLP
  c.base_channels = 64  # images: DCGAN width
  c.num_eval_samples = 5000  # images: generated samples for the classifier metrics
  c.classifier_dir = ""  # "" = $DGMJAX_CACHE or ~/.cache/dgmjax
  c.classifier_steps = 400  # training steps of the metric classifier (first use only)
  c.log_every = 250
  c.checkpoint_every = 10000
  c.image_every = 5000
  c.eval_every = 0
  return c


def is_toy(config) -> bool:
  return config.dataset in TOY_DATASETS


def latent_dim(config) -> int:
  if config.latent_dim:
    return config.latent_dim
  return 2 if is_toy(config) else 64


def _validate(config) -> None:
  need = harness.config_check(config)
  is_int = harness.is_int

  need(is_toy(config) or config.dataset == "digits" or config.dataset.startswith("tfds:"),
       "dataset", "'ring', 'grid', 'digits' or 'tfds:<name>'")
  need(config.generator_loss in GENERATOR_LOSSES, "generator_loss", f"one of {GENERATOR_LOSSES}")
  need(config.lr_schedule in LR_SCHEDULES, "lr_schedule", f"one of {LR_SCHEDULES}")
  need(0.0 < config.real_label <= 1.0, "real_label", "in (0, 1]")
  need(config.r1_weight >= 0, "r1_weight", ">= 0 (0 = no R1 penalty)")
  need(config.d_learning_rate >= 0, "d_learning_rate", ">= 0 (0 = learning_rate)")
  need(0.0 <= config.final_lr_fraction <= 1.0, "final_lr_fraction", "in [0, 1]")
  need(0.0 <= config.adam_b1 < 1.0, "adam_b1", "in [0, 1)")
  need(0.0 <= config.adam_b2 < 1.0, "adam_b2", "in [0, 1)")
  need(is_int(config.n_critic, 1), "n_critic", "an int >= 1")
  need(is_int(config.pack, 1), "pack", "an int >= 1")
  need(is_int(config.latent_dim, 0), "latent_dim", "an int >= 0 (0 = dataset default)")
  need(is_int(config.base_channels, 1), "base_channels", "an int >= 1")
  need(is_int(config.num_eval_samples, 2), "num_eval_samples", "an int >= 2")
  need(is_int(config.classifier_steps, 1), "classifier_steps", "an int >= 1")
  need(not (config.simultaneous and config.n_critic != 1), "n_critic",
       "1 when simultaneous=True (simultaneous updates have one critic step)")
  need(config.batch_size % config.pack == 0, "batch_size", f"divisible by pack={config.pack}")
  need(config.eval_batch_size % config.pack == 0, "eval_batch_size",
       f"divisible by pack={config.pack}")
  for key in ("g_features", "d_features"):
    need(len(config[key]) >= 1 and all(is_int(w, 1) for w in config[key]), key,
         "a non-empty tuple of ints >= 1")
  if not is_toy(config):
    need(config.pixel_format == "symmetric", "pixel_format",
         "'symmetric' for the GAN (its generator ends in tanh)")


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------
def eval_latents(config, n: int) -> np.ndarray:
  """The fixed latents every evaluation and picture of a run uses."""
  key = jax.random.fold_in(jax.random.key(config.seed), 20140610)
  return np.asarray(jax.random.normal(key, (n, latent_dim(config))), np.float32)


def load(config) -> tuple[dict, dict, harness.DataInfo]:
  """The ``load=`` hook: 2-D data need no files, images come from the harness.

  Test split: 2500 real 2-D samples (or the test images) plus fixed latents
  ``z``, so the evaluation compares held-out real data with the same fakes
  every time.
  """
  _validate(config)
  if is_toy(config):
    n = mc.NUM_SAMPLES
    key = jax.random.fold_in(jax.random.key(config.seed), 1)
    test = {"x": np.asarray(_SAMPLERS[config.dataset](key, n), np.float32),
            "z": eval_latents(config, n)}
    # Real 2-D samples are drawn inside the step; the loader only paces it.
    train = {"placeholder": np.zeros((config.batch_size, 1), np.float32)}
    return train, test, harness.DataInfo((2,), 0, n)
  train, test, info = harness.load_data(config)
  test["z"] = eval_latents(config, len(test["image"]))
  return train, test, info


# ----------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------
def _local(x: jax.Array, axis_name: str | None) -> jax.Array:
  """This device's slice of a globally drawn batch (identity without an axis).

  Drawing the global batch from the replicated key and slicing it makes a
  ``shard_map`` step see exactly the samples of the single-device step.
  """
  if axis_name is None:
    return x
  n = jax.lax.axis_size(axis_name)
  b = x.shape[0] // n
  return jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(axis_name) * b, b)


def _optimizer(config, lr: float, steps: int) -> optax.GradientTransformation:
  if config.lr_schedule == "cosine":
    lr = optax.cosine_decay_schedule(lr, steps, alpha=config.final_lr_fraction)
  return optax.adam(lr, b1=config.adam_b1, b2=config.adam_b2)


def build_models(config, info: harness.DataInfo):
  """(generator, discriminator) Flax modules for the dataset."""
  if is_toy(config):
    return (MLPGenerator(tuple(config.g_features), 2),
            MLPDiscriminator(tuple(config.d_features)))
  return (DCGANGenerator(tuple(info.image_shape), config.base_channels),
          DCGANDiscriminator(config.base_channels))


def make_task(config, info: harness.DataInfo) -> harness.Task:
  _validate(config)
  toy_data = is_toy(config)
  if not toy_data:
    h, w, _ = info.image_shape
    if h % 4 or w % 4:
      raise ConfigError(f"image height and width must be multiples of 4, got {info.image_shape}.")
  G, D = build_models(config, info)
  dz = latent_dim(config)
  m = config.pack
  d_lr = config.d_learning_rate or config.learning_rate
  tx_g = _optimizer(config, config.learning_rate, config.num_steps)
  tx_d = _optimizer(config, d_lr, config.num_steps * config.n_critic)
  g_loss_per_example = (gan_losses.generator_loss_non_saturating
                        if config.generator_loss == "non_saturating"
                        else gan_losses.generator_loss_minimax)
  z_eval = jnp.asarray(eval_latents(config, mc.NUM_SAMPLES))

  def check_batch(batch):
    if toy_data:
      x = batch["x"]
      if x.ndim != 2 or x.shape[1] != 2:
        raise ConfigError(f"2-D data must have shape (B, 2), got {x.shape}.")
      return
    x = batch["image"]
    if x.ndim != 4 or x.shape[1:] != tuple(info.image_shape):
      raise ConfigError(f"images must have shape (B, {', '.join(map(str, info.image_shape))}), "
                        f"got {x.shape}.")

  def init(key, batch):
    k_g, k_d, k_rng_g, k_rng_d = jax.random.split(key, 4)
    z = jnp.zeros((m, dz), jnp.float32)
    p_g = G.init(k_g, z)
    p_d = D.init(k_d, pack(G.apply(p_g, z), m))
    return {"gen": create_train_state(p_g, tx_g, k_rng_g),
            "disc": create_train_state(p_d, tx_d, k_rng_d)}

  def d_loss_fn(p_d, p_g, x_real, z):
    x_real = pack(x_real, m)
    if config.r1_weight:
      # One pass gives both the logits and ∇_x l (each logit depends on its own
      # example only, so the gradient of the sum is the per-example gradient).
      l_real, vjp = jax.vjp(lambda x: D.apply(p_d, x), x_real)
      (grad_x,) = vjp(jnp.ones_like(l_real))
      sq_norm = jnp.sum(jnp.square(grad_x).reshape(grad_x.shape[0], -1), axis=-1)
      penalty = 0.5 * config.r1_weight * jnp.mean(sq_norm)
    else:
      l_real, penalty = D.apply(p_d, x_real), 0.0
    l_fake = D.apply(p_d, pack(G.apply(p_g, z), m))
    real_loss, fake_loss = gan_losses.discriminator_loss(l_real, l_fake,
                                                         real_label=config.real_label)
    bce = jnp.mean(real_loss) + jnp.mean(fake_loss)
    return bce + penalty, (l_real, l_fake, bce, penalty)

  def g_loss_fn(p_g, p_d, z):
    return jnp.mean(g_loss_per_example(D.apply(p_d, pack(G.apply(p_g, z), m))))

  def d_metrics(bce, penalty, l_real, l_fake, axis_name):
    return {
        "train/d_loss": bce,  # the BCE alone, so log 4 − d_loss stays the JSD estimate
        "train/r1_penalty": penalty,
        "train/jsd": gan_losses.jsd_estimate(l_real, l_fake, axis_name=axis_name),
        "train/d_real": mean_over(jnp.mean(jax.nn.sigmoid(l_real)), axis_name),
        "train/d_fake": mean_over(jnp.mean(jax.nn.sigmoid(l_fake)), axis_name),
    }

  def train_step(state, batch, axis_name=None):
    gen, disc = state["gen"], state["disc"]
    n_dev = 1 if axis_name is None else jax.lax.axis_size(axis_name)
    if toy_data:
      b_global = config.batch_size
    else:
      b_global = batch["image"].shape[0] * n_dev

    def draw_z(k):
      return _local(jax.random.normal(k, (b_global, dz)), axis_name)

    def draw_real(k):
      if toy_data:
        return _local(_SAMPLERS[config.dataset](k, b_global), axis_name)
      return batch["image"]

    def d_update(disc, k):
      k_real, k_z = jax.random.split(k)
      (_, (l_real, l_fake, bce, penalty)), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
          as_local(disc.params, axis_name), gen.params, draw_real(k_real), draw_z(k_z))
      grads, bce, penalty = mean_over((grads, bce, jnp.asarray(penalty, jnp.float32)), axis_name)
      return (disc.apply_gradients(grads=grads),
              d_metrics(bce, penalty, l_real, l_fake, axis_name))

    def g_grads(p_d, z):
      loss, grads = jax.value_and_grad(g_loss_fn)(as_local(gen.params, axis_name), p_d, z)
      return mean_over((loss, grads), axis_name)

    k_d, k_g = jax.random.split(step_key(gen))
    critic_keys = jax.random.split(k_d, config.n_critic)
    if config.simultaneous:
      # Both gradients at (G_t, D_t): the generator sees the old discriminator.
      new_disc, metrics = d_update(disc, critic_keys[0])
      g_loss, grads_g = g_grads(disc.params, draw_z(k_g))
    else:
      if config.n_critic == 1:
        new_disc, metrics = d_update(disc, critic_keys[0])
      else:
        # Fully unrolled: XLA:CPU runs convolutions inside a loop body several
        # times slower (measured 3-5x for the DCGAN step; a length-1 scan
        # keeps its loop even when unrolled, hence the branch above).
        new_disc, metrics = jax.lax.scan(d_update, disc, critic_keys, unroll=True)
        metrics = jax.tree.map(lambda v: v[-1], metrics)  # the last critic update
      g_loss, grads_g = g_grads(new_disc.params, draw_z(k_g))
    new_gen = gen.apply_gradients(grads=grads_g)
    metrics["train/g_loss"] = g_loss
    metrics["train/g_grad_norm"] = optax.global_norm(grads_g)
    return {"gen": new_gen, "disc": new_disc}, metrics

  def eval_step(state, batch):
    """Held-out D loss / JSD on real test data vs fakes from fixed latents."""
    x_real = batch["x"] if toy_data else batch["image"]
    fake = G.apply(state["gen"].params, batch["z"])
    l_real = D.apply(state["disc"].params, pack(x_real, m))
    l_fake = D.apply(state["disc"].params, pack(fake, m))
    real_loss, fake_loss = gan_losses.discriminator_loss(l_real, l_fake)
    d_loss = jnp.repeat(real_loss + fake_loss, m)  # one value per example of a pack
    out = {"d_loss": d_loss, "jsd": 0.5 * (math.log(4.0) - d_loss)}
    if toy_data:
      centers, std = _modes(config.dataset)
      _, dist = mc.nearest_mode(fake, centers, std=std)
      out["high_quality"] = (dist <= mc.THRESHOLD).astype(jnp.float32)
    return out

  @jax.jit
  def _generate(params, z):
    return G.apply(params, z)

  def generate(state, z: np.ndarray, chunk: int = 1000) -> np.ndarray:
    return np.concatenate([np.asarray(_generate(state["gen"].params, z[i : i + chunk]))
                           for i in range(0, len(z), chunk)])

  def images(state, batch):
    step = int(jax.device_get(state["gen"].step))
    if toy_data:
      samples = generate(state, np.asarray(z_eval))
      cov = mc.toy_mode_coverage(jnp.asarray(samples), config.dataset)
      title = (f"step {step}: {int(cov.modes_covered)}/{len(cov.counts)} modes, "
               f"{100 * float(cov.high_quality_fraction):.1f}% high quality")
      return {"samples": scatter_picture(samples, config.dataset, title=title)}
    x = generate(state, np.asarray(batch["z"]))
    return {"samples": (np.clip(x, -1.0, 1.0) + 1.0) / 2.0}

  def report(state, ctx: harness.Context):
    if ctx.is_main:
      save_curves(ctx.workdir)
    if toy_data:
      samples = generate(state, np.asarray(z_eval))
      cov = mc.toy_mode_coverage(jnp.asarray(samples), config.dataset)
      if ctx.is_main:
        save_gif(ctx.workdir)
      return {"modes_covered": int(cov.modes_covered), "num_modes": len(cov.counts),
              "high_quality_fraction": float(cov.high_quality_fraction),
              "mode_kl": float(cov.mode_kl),
              "mode_counts": [int(c) for c in np.asarray(cov.counts)]}
    return image_metrics(config, ctx.info, lambda z: generate(state, z))

  return harness.Task(init=init, train_step=train_step, eval_step=eval_step,
                      images=images, report=report, check_batch=check_batch)


def _modes(dataset: str):
  if dataset == "ring":
    return toy.ring_centers(8), toy.RING_STD
  return toy.grid_centers(), toy.GRID_STD


def image_metrics(config, info: harness.DataInfo, generate) -> dict:
  """Class coverage, class KL and Fréchet classifier distance of a generator.

  ``generate(z) -> images in [-1, 1]``. The classifier is trained on the
  run's training images on first use and cached (``config.classifier_dir``).
  The Fréchet distance compares ``num_eval_samples`` generated images with
  the training images; the same distance between the test and training
  images (only as many as the test split has) is reported as a reference.
  """
  ds = info.dataset
  unit = lambda a: np.asarray(a, np.float32) / 255.0
  model = clf.load_or_train_classifier(unit(ds.train_images), ds.train_labels,
                                       unit(ds.test_images), ds.test_labels,
                                       cache_dir=config.classifier_dir or None,
                                       steps=config.classifier_steps)
  fake = (np.clip(generate(eval_latents(config, config.num_eval_samples)), -1, 1) + 1) / 2
  probs, feats = model.predict(fake)
  _, train_feats = model.predict(unit(ds.train_images))
  _, test_feats = model.predict(unit(ds.test_images))
  ref = clf.feature_statistics(train_feats)
  cov = clf.class_coverage(probs)
  return {
      "classes_covered": cov["classes_covered"],
      "class_kl": cov["class_kl"],
      "class_histogram": cov["histogram"],
      "confident_fraction": cov["confident_fraction"],
      "frechet_classifier_distance": clf.frechet_distance(*clf.feature_statistics(feats), *ref),
      "frechet_classifier_distance_test_vs_train": clf.frechet_distance(
          *clf.feature_statistics(test_feats), *ref),
      "classifier_test_accuracy": model.test_accuracy,
  }


# ----------------------------------------------------------------------------
# Pictures (PIL only: matplotlib is not a dependency)
# ----------------------------------------------------------------------------
def _font():
  from PIL import ImageFont

  return ImageFont.load_default()


def scatter_picture(samples: np.ndarray, dataset: str, *, title: str = "",
                    size: int = 360) -> np.ndarray:
  """Samples (black dots) over the true modes (red circles of radius 3σ).

  Returns a uint8 (H, W, 3) picture of the square ``[−e, e]²`` (e = 1.5 for
  the ring, 5 for the grid).
  """
  from PIL import Image, ImageDraw

  extent = _EXTENT[dataset]
  centers, std = _modes(dataset)
  top = 22
  img = Image.new("RGB", (size, size + top), "white")
  draw = ImageDraw.Draw(img)
  scale = (size - 1) / (2 * extent)

  def px(p):
    return (p[..., 0] + extent) * scale, top + (extent - p[..., 1]) * scale

  draw.rectangle([0, top, size - 1, size + top - 1], outline=(180, 180, 180))
  xs, ys = px(np.asarray(samples, np.float64))
  inside = (xs >= 0) & (xs < size) & (ys >= top) & (ys < size + top)
  for x, y in zip(xs[inside], ys[inside], strict=True):
    draw.rectangle([x - 0.5, y - 0.5, x + 0.5, y + 0.5], fill=(20, 20, 20))
  r = max(3 * std * scale, 3.0)
  cx, cy = px(np.asarray(centers, np.float64))
  for x, y in zip(cx, cy, strict=True):
    draw.ellipse([x - r, y - r, x + r, y + r], outline=(220, 30, 30))
  n_out = int((~inside).sum())
  text = title + (f" ({n_out} outside)" if n_out else "")
  draw.text((4, 4), text, fill=(0, 0, 0), font=_font())
  return np.asarray(img)


def line_plot(series: dict[str, tuple[np.ndarray, np.ndarray]], *, title: str = "",
              hlines: dict[str, float] | None = None, size: tuple[int, int] = (640, 360),
              xlabel: str = "step", widths: tuple[int, ...] = ()) -> np.ndarray:
  """Curves ``{name: (x, y)}`` with a legend, as a uint8 (H, W, 3) picture.

  ``widths[i]`` is the line width of series i (default 2); text is drawn with
  PIL's bitmap font, so keep labels ASCII.
  """
  from PIL import Image, ImageDraw

  colors = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
  hlines = hlines or {}
  w, h = size
  left, right, top, bottom = 56, 12, 24, 34
  img = Image.new("RGB", size, "white")
  draw = ImageDraw.Draw(img)
  font = _font()
  xs = np.concatenate([np.asarray(x, np.float64) for x, _ in series.values()])
  ys = np.concatenate([np.asarray(y, np.float64) for _, y in series.values()] +
                      [np.asarray(list(hlines.values()), np.float64)])
  ys = ys[np.isfinite(ys)]
  x0, x1 = float(xs.min()), float(xs.max())
  y0, y1 = float(ys.min()), float(ys.max())
  if x1 == x0:
    x1 = x0 + 1.0
  pad = 0.05 * (y1 - y0 or 1.0)
  y0, y1 = y0 - pad, y1 + pad

  def to_px(x, y):
    return (left + (np.asarray(x) - x0) / (x1 - x0) * (w - left - right),
            top + (y1 - np.asarray(y)) / (y1 - y0) * (h - top - bottom))

  draw.rectangle([left, top, w - right, h - bottom], outline=(120, 120, 120))
  for frac in np.linspace(0, 1, 5):
    yv = y0 + frac * (y1 - y0)
    _, py = to_px(x0, yv)
    draw.line([left - 4, py, left, py], fill=(120, 120, 120))
    draw.text((2, py - 6), f"{yv:.3g}", fill=(0, 0, 0), font=font)
    xv = x0 + frac * (x1 - x0)
    qx, _ = to_px(xv, y0)
    draw.line([qx, h - bottom, qx, h - bottom + 4], fill=(120, 120, 120))
    label = f"{xv:.3g}"
    draw.text((min(qx - 12, w - 6 * len(label) - 2), h - bottom + 6), label, fill=(0, 0, 0),
              font=font)
  draw.text((w // 2 - 20, h - 14), xlabel, fill=(0, 0, 0), font=font)
  for name, yv in hlines.items():
    _, py = to_px(x0, yv)
    draw.line([left, py, w - right, py], fill=(160, 160, 160))
    draw.text((w - right - 70, py - 12), name, fill=(110, 110, 110), font=font)
  for i, (x, y) in enumerate(series.values()):
    color = colors[i % len(colors)]
    qx, qy = to_px(x, y)
    pts = [(float(a), float(b)) for a, b in zip(qx, qy, strict=True) if np.isfinite(b)]
    if len(pts) > 1:
      draw.line(pts, fill=color, width=widths[i] if i < len(widths) else 2)
  for i, name in enumerate(series):  # the legend on top of the curves
    box = draw.textbbox((left + 8, top + 4 + 12 * i), name, font=font)
    draw.rectangle(box, fill="white")
    draw.text((left + 8, top + 4 + 12 * i), name, fill=colors[i % len(colors)], font=font)
  draw.text((left, 6), title, fill=(0, 0, 0), font=font)
  return np.asarray(img)


def save_curves(workdir: str) -> str | None:
  """``images/curves.png``: D loss, G loss and the JSD estimate vs step."""
  from train.images import save_png

  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    rows = [json.loads(ln) for ln in f if ln.strip()]
  rows = [r for r in rows if "train/d_loss" in r]
  if len(rows) < 2:
    return None
  steps = np.array([r["step"] for r in rows], np.float64)
  series = {k.split("/")[1]: (steps, np.array([r[k] for r in rows]))
            for k in ("train/d_loss", "train/g_loss", "train/jsd")}
  pic = line_plot(series, title="GAN losses and the JSD estimate (log 4 - d_loss)/2",
                  hlines={"log 4": math.log(4.0), "log 2": math.log(2.0)})
  out = os.path.join(workdir, "images", "curves.png")
  save_png(pic, out)
  return out


def save_gif(workdir: str, name: str = "samples") -> str | None:
  """Animate the saved ``images/<name>_<step>.png`` frames into a GIF."""
  from PIL import Image

  frames = sorted(glob.glob(os.path.join(workdir, "images", f"{name}_[0-9]*.png")))
  if not frames:
    return None
  out = os.path.join(workdir, "images", f"{name}.gif")
  pics = [Image.open(p).convert("P", palette=Image.Palette.ADAPTIVE) for p in frames]
  pics[0].save(out, save_all=True, append_images=pics[1:], duration=600, loop=0)
  return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Programmatic entry point (tests, benchmarks, notebooks)."""
  return harness.train_and_evaluate(config, workdir, make_task, load=load)


if __name__ == "__main__":
  harness.run_cli("gan", get_config, make_task, load=load)
