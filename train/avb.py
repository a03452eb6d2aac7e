"""Adversarial Variational Bayes (Mescheder et al. 2017): ``python -m train.avb``.

Lecture 7, slides "Adversarial Variational Bayes" and "Density ratio trick".
The model (:class:`dgmjax.models.avb.AVB`) has an implicit encoder
z = g_φ(x, ε); a discriminator T(x, z) learns log q(z|x) − log p(z) by BCE,
so the ELBO's KL term becomes E_q[T(x, z)]. One step: ``disc_steps``
updates of T (:meth:`~dgmjax.models.avb.AVB.disc_loss`, the model fixed), then
one update of encoder and decoder (:meth:`~dgmjax.models.avb.AVB.model_loss`,
gradients reaching φ through z inside T).

Data: ``avb_toy`` (the paper's four one-hot 2×2 images, 2-D latent, default),
``digits`` or ``tfds:<name>``, binary pixels. ``encoder=gaussian`` with
``kl=analytic`` is the plain VAE baseline; with ``kl=adversarial``, the
KL-estimator check. Evaluation: the test ELBO estimate, an importance-sampled
``test/log_px`` with a Gaussian proposal fitted to each x's encoder samples
(:func:`dgmjax.eval.likelihood.importance_log_marginal`), and for a 2-D latent
the grid value ``test/log_px_grid`` and ``images/posteriors.png``. Details
in ``docs/avb.md``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dgmjax import plots, rng
from dgmjax.data import ImageDataset, toy
from dgmjax.eval import example_keys, likelihood
from dgmjax.images import make_grid, side_by_side
from dgmjax.models.avb import AVB, ENCODERS, KLS, make_avb
from dgmjax.nn.avb import ACTIVATIONS
from train import harness
from train.state import count_params, create_train_state, step_key

BINARY = ("binary_dynamic", "binary_static")
TOY_IMAGE_SHAPE = (2, 2, 1)


def get_config() -> ml_collections.ConfigDict:
  c = harness.base_config()
  c.dataset = "avb_toy"  # "avb_toy" | "digits" | "tfds:<name>"
  c.pixel_format = "binary_dynamic"
  c.num_steps = 4000
  c.batch_size = 512
  c.eval_batch_size = 256
  c.learning_rate = 1e-3  # encoder + decoder
  c.disc_learning_rate = 1e-3
  c.adam_b1 = 0.5
  c.disc_steps = 2  # discriminator updates per model update
  c.log_every = 200
  c.checkpoint_every = 2000
  c.num_images = 64
  # Model.
  c.encoder = "implicit"  # "implicit" (AVB) | "gaussian"
  c.kl = "adversarial"  # "adversarial" (T) | "analytic" (gaussian encoder: plain VAE)
  c.latent_dim = 2
  c.noise_dim = 8  # size of ε for the implicit encoder
  c.noise_every_layer = True
  c.hidden = (256, 256)  # encoder widths; the decoder mirrors them
  c.disc_hidden = (256, 256)
  c.disc_x_hidden = ()  # layers embedding x alone before it meets z
  c.disc_activation = "relu"
  c.disc_prior_term = True  # T = T_net + ‖z‖²/2
  c.adaptive_contrast = False
  c.ac_samples = 16  # extra z draws per x that estimate the moments (adaptive contrast)
  c.eval_samples = 16  # z draws per test x for test/elbo, test/kl (averaged)
  # Toy data.
  c.toy_train_size = 8192
  # Evaluation (report).
  c.ll_samples = 1000  # importance samples for test log p(x) (0 = skip)
  c.ll_chunk = 100
  c.ll_moment_samples = 256  # encoder draws that fit the Gaussian proposal
  c.ll_proposal_scales = (1.0, 1.5, 2.0)  # widths of the Gaussian proposal mixture
  c.ll_prior_weight = 0.0  # α of the defensive N(0, I) component of the proposal
  c.grid_size = 512  # 2-D latent: grid points per axis for ∫ p(x|z)p(z)dz (0 = skip)
  c.scatter_samples = 400  # posterior samples per test point in the scatter
  return c


def validate(config) -> None:
  harness.check_config(
      config, choices={"encoder": ENCODERS, "kl": KLS, "pixel_format": BINARY,
                       "disc_activation": tuple(ACTIVATIONS)},
      ints={"latent_dim": 1, "noise_dim": 1, "disc_steps": 1, "ac_samples": 1,
            "eval_samples": 1, "ll_chunk": 1, "scatter_samples": 1, "ll_samples": 0,
            "grid_size": 0, "ll_moment_samples": 2},
      int_tuples=("hidden", "disc_hidden"),
      ranges={"disc_learning_rate": "(0, inf)", "adam_b1": "[0, 1)",
              "ll_prior_weight": "[0, 1)"})
  need = harness.config_check(config)
  if config.kl == "analytic":
    need(config.encoder == "gaussian", "kl", "'adversarial' for encoder='implicit' (an "
         "implicit q(z|x) has no density, so no analytic KL)")
    need(not config.adaptive_contrast, "adaptive_contrast", "False for kl='analytic'")
  if config.adaptive_contrast and config.encoder == "implicit":
    need(config.ac_samples >= 2, "ac_samples",
         ">= 2 with adaptive_contrast (the moments are estimated from the draws)")
  need(all(harness.is_int(h, 1) for h in config.disc_x_hidden), "disc_x_hidden",
       "a tuple of ints >= 1")
  need(len(config.ll_proposal_scales) >= 1 and all(
      harness.is_finite(v) and v > 0 for v in config.ll_proposal_scales),
       "ll_proposal_scales", "a non-empty tuple of widths > 0")
  if config.dataset == "avb_toy":
    need(harness.is_int(config.toy_train_size, config.batch_size), "toy_train_size",
         f">= batch_size ({config.batch_size})")


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------
def toy_dataset(seed: int, num_train: int) -> ImageDataset:
  """The AVB toy as images: ``num_train`` draws of the four one-hot 2×2 images.

  Training images are i.i.d. uniform draws (:func:`dgmjax.data.toy.sample_avb_points`);
  the test split is the four points once each, so a test mean is the exact
  expectation over the uniform data distribution π(x). Labels are the index
  of the lit pixel.
  """
  pts = np.asarray(toy.sample_avb_points(jax.random.key(seed), num_train))
  test = np.asarray(toy.avb_points())

  def as_images(p):
    return (p.reshape((-1,) + TOY_IMAGE_SHAPE) * 255).astype(np.uint8)

  return ImageDataset("avb_toy", as_images(pts), pts.argmax(-1).astype(np.int64),
                      as_images(test), test.argmax(-1).astype(np.int64))


def load(config):
  """The harness ``load=`` hook: the toy, or the harness's image data."""
  if config.dataset == "avb_toy":
    validate(config)
    ds = toy_dataset(config.seed, config.toy_train_size)
    train = {"image": ds.train_images, "label": ds.train_labels}
    test = {"image": ds.test_images, "label": ds.test_labels}
    info = harness.DataInfo(TOY_IMAGE_SHAPE, len(ds.train_images), len(ds.test_images), ds)
    return train, test, info
  return harness.load_data(config)


def build_model(config, image_shape) -> AVB:
  """The :class:`AVB` a config describes (validates the model keys)."""
  validate(config)
  return make_avb(
      image_shape=tuple(image_shape), encoder=config.encoder, kl=config.kl,
      latent_dim=config.latent_dim, noise_dim=config.noise_dim,
      noise_every_layer=config.noise_every_layer, hidden=tuple(config.hidden),
      disc_hidden=tuple(config.disc_hidden), disc_x_hidden=tuple(config.disc_x_hidden),
      disc_activation=config.disc_activation, disc_prior_term=config.disc_prior_term,
      adaptive_contrast=config.adaptive_contrast, ac_samples=config.ac_samples)


def make_task(config, info: harness.DataInfo) -> harness.Task:
  model = build_model(config, info.image_shape)
  adversarial = config.kl == "adversarial"
  d = config.latent_dim
  tx_model = optax.adam(config.learning_rate, b1=config.adam_b1)
  tx_disc = optax.adam(config.disc_learning_rate, b1=config.adam_b1)
  eval_key = jax.random.key(config.seed + 7919)

  def init(key, batch):
    k_model, k_rng_m, k_rng_d = jax.random.split(key, 3)
    params, disc = model.init(k_model, jnp.asarray(batch["image"], jnp.float32))
    state = {"model": create_train_state(params, tx_model, k_rng_m)}
    if adversarial:
      state["disc"] = create_train_state(disc, tx_disc, k_rng_d)
    return state

  def train_step(state, batch):
    x = batch["image"]
    k_disc, k_model = jax.random.split(step_key(state["model"]))
    metrics = {}
    if adversarial:
      disc, losses, accs = state["disc"], [], []
      for i in range(config.disc_steps):
        (loss, acc), grads = jax.value_and_grad(model.disc_loss, has_aux=True)(
            disc.params, state["model"].params, x, jax.random.fold_in(k_disc, i))
        disc = disc.apply_gradients(grads=grads)
        losses.append(loss)
        accs.append(acc)
      state = {**state, "disc": disc}
      metrics = {"train/d_loss": jnp.mean(jnp.stack(losses)),
                 "train/d_acc": jnp.mean(jnp.stack(accs))}
    disc_params = state["disc"].params if adversarial else None
    (loss, aux), grads = jax.value_and_grad(model.model_loss, has_aux=True)(
        state["model"].params, disc_params, x, k_model)
    metrics.update({"train/loss": loss, "train/elbo": aux["rec"] - aux["kl"],
                    "train/rec": aux["rec"], "train/kl": aux["kl"]})
    if "kl_analytic" in aux:
      metrics["train/kl_analytic"] = aux["kl_analytic"]
    return {**state, "model": state["model"].apply_gradients(grads=grads)}, metrics

  def per_example_noise(key, index, num):
    """``model.noise`` with each example's draws keyed by its position in the split,
    so a split gives the same figures in any batch size or device count."""
    eps, eps_m = jax.vmap(lambda k: model.noise(k, 1, num))(example_keys(key, index))
    # (B, S, 1, e) -> (S, B, e)
    return tuple(None if e is None else jnp.moveaxis(e[:, :, 0], 0, 1) for e in (eps, eps_m))

  def eval_step(state, batch):
    x = batch["image"]
    eps, eps_m = per_example_noise(eval_key, batch["index"], config.eval_samples)
    disc_params = state["disc"].params if adversarial else None
    log_lik, kl, exact = model.terms(state["model"].params, disc_params, x, eps, eps_m)
    out = {"elbo": jnp.mean(log_lik - kl, 0), "rec": jnp.mean(log_lik, 0),
           "kl": jnp.mean(kl, 0)}
    if exact is not None and adversarial:
      out["kl_analytic"] = jnp.mean(exact, 0)
    return out

  def log_px_step(state, batch):
    k = max(1, config.ll_samples)

    def one(x, key):
      return model.log_marginal(
          state["model"].params, x[None], key, num_samples=k,
          chunk_size=min(config.ll_chunk, k), num_moment_samples=config.ll_moment_samples,
          scales=tuple(float(v) for v in config.ll_proposal_scales),
          prior_weight=config.ll_prior_weight)[0]

    keys = example_keys(jax.random.fold_in(eval_key, 1), batch["index"])
    return {"log_px": jax.vmap(one)(batch["image"], keys)}

  def posterior_samples_step(state, batch):  # (B, n, d): examples first, for the harness
    keys = example_keys(jax.random.fold_in(eval_key, 2), batch["index"])
    eps = jnp.moveaxis(jax.vmap(lambda k: rng.normal(k, (config.scatter_samples, model.eps_dim)))(
        keys), 0, 1)  # (S, B, e)
    return {"z": jnp.moveaxis(model.sample(state["model"].params, batch["image"], eps), 0, 1),
            "label": batch["label"]}

  def scatter(z, labels, title):
    z = np.asarray(z)  # (N, n, 2)
    lab = np.broadcast_to(np.asarray(labels)[:, None], z.shape[:2]).reshape(-1)
    order = np.random.default_rng(0).permutation(len(lab))
    return plots.posterior_scatter(z.reshape(-1, 2)[order], lab[order], title=title)

  def images(state, batch):
    out = {}
    x = jnp.asarray(batch["image"], jnp.float32)
    if d == 2 and "label" in batch:
      z = posterior_samples_step(state, {**batch, "index": np.arange(len(x))})["z"]
      out["posteriors"] = scatter(z, batch["label"],
                                  f"q(z|x) by class, step {int(state['model'].step)}")
    if tuple(info.image_shape[:2]) != TOY_IMAGE_SHAPE[:2]:
      params = state["model"].params
      eps = jax.random.normal(jax.random.key(config.seed + 3), (1, x.shape[0], model.eps_dim))
      rec = np.asarray(jax.nn.sigmoid(model.decoder.apply(params["decoder"],
                                                          model.sample(params, x, eps)[0])))
      z0 = jax.random.normal(jax.random.key(config.seed + 31), (config.num_images, d))
      out["reconstructions"] = side_by_side(np.asarray(x), rec)
      out["samples"] = make_grid(np.asarray(jax.nn.sigmoid(
          model.decoder.apply(params["decoder"], z0))))
    return out

  def report(state, ctx: harness.Context):
    params = state["model"].params
    out = {"num_params/model": count_params(params)}
    ev = ctx.results["elbo"]["test"]
    if adversarial:
      out["num_params/disc"] = count_params(state["disc"].params)
      if "kl_analytic" in ev:
        out["test/kl_rel_error"] = abs(ev["kl"] - ev["kl_analytic"]) / max(ev["kl_analytic"],
                                                                           1e-12)
    if config.ll_samples:
      out["ll_samples"] = config.ll_samples
    if d == 2:
      test = harness.formatted({"image": ctx.info.dataset.test_images}, config.pixel_format)
      x_flat = test["image"].reshape(ctx.info.num_test, -1)
      if config.grid_size:
        dec = lambda z: model.decoder.apply(params["decoder"], z).reshape(z.shape[0], -1)
        out["test/log_px_grid"] = float(np.mean(likelihood.grid_log_marginal(
            dec, x_flat, size=config.grid_size)))
      post = ctx.results["posterior"]["test"]
      title = {("implicit", "adversarial"): "AVB (implicit q)",
               ("gaussian", "analytic"): "VAE (Gaussian q)",
               ("gaussian", "adversarial"): "Gaussian q, adversarial KL"}[
                   (config.encoder, config.kl)] + f", step {int(state['model'].step)}"
      if "test/log_px_grid" in out:
        title += f": log p(x) = {out['test/log_px_grid']:.3f}"
      n_show = min(ctx.info.num_test, 1000)
      ctx.image("posteriors", scatter(post["z"][:n_show], post["label"][:n_show], title))
      ctx.write_arrays("posterior_samples.npz", z=np.moveaxis(post["z"][:n_show], 1, 0),
                       labels=post["label"][:n_show])
    return out

  evals = {"elbo": harness.Eval(eval_step, during_training=True)}
  if config.ll_samples:
    evals["log_px"] = harness.Eval(log_px_step)
  if d == 2:
    evals["posterior"] = harness.Eval(posterior_samples_step, gather=True)
  return harness.Task(init=init, train_step=train_step, evals=evals, images=images,
                      report=report)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Train (or resume) the run of ``config`` in ``workdir``; returns the summary."""
  return harness.train_and_evaluate(config, workdir, make_task, load=load)


def main() -> None:
  """``python -m train.avb`` / ``dgmjax-avb``."""
  harness.run_cli("avb", get_config, make_task, load=load)


if __name__ == "__main__":
  main()
