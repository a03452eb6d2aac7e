"""GANs, JSD and mode collapse: ``python -m train.gan``.

Lecture 7, slides "GAN objective", "GAN optimality", "GAN training" and "Mode
collapse". At the optimal D the game's value is 2·JSD(π||p) − log 4, so
``train/jsd = (log 4 − d_loss) / 2`` is a running JSD estimate.

Data: ``ring`` (8 Gaussians, σ = 0.01, default) or ``grid`` (25, σ = 0.05),
drawn inside the step, scored by mode coverage (:mod:`dgmjax.metrics.mode_coverage`)
with a scatter every ``image_every`` steps and a GIF; or ``digits`` /
``tfds:<name>`` with DCGAN nets, scored by the project's digit classifier
(:mod:`dgmjax.eval.samples`; not FID).

One step: ``n_critic`` discriminator updates (a ``lax.scan``) on the BCE plus
the R1 penalty (γ = ``r1_weight``; ``train/d_loss`` logs the BCE alone), then
one generator update against the updated D (non-saturating or minimax);
``simultaneous=True`` takes both gradients at (G_t, D_t); ``pack > 1`` is
PacGAN. The state is ``{"gen", "disc"}``; all randomness comes from
``step_key(state["gen"])``. Settings for each data set: ``docs/gan.md``.

Vanishing gradients (Lecture 7, "Vanishing gradients"): with
``both_grad_norms=True`` every step also logs ‖∇_θ L_G‖ of *both* generator
losses at the same (G, D, z), ``train/g_grad_norm_minimax`` and
``train/g_grad_norm_non_saturating`` (the run trains with the configured one),
next to the discriminator's accuracy ``train/d_accuracy``; the report draws
them as ``images/gen_grad_norms.png``. Per fake, ∂L/∂l is −D(G(z)) for the
minimax loss and −(1 − D(G(z))) for the non-saturating one, so when D rejects
the fakes (D(G(z)) → 0) the minimax gradient vanishes and the other does not.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dgmjax import plots
from dgmjax.data import toy
from dgmjax.eval import samples as sample_eval
from dgmjax.losses import gan as gan_losses
from dgmjax.metrics import evaluate_samples
from dgmjax.metrics import mode_coverage as mc
from dgmjax.nn import gan as gan_nn
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
  c.both_grad_norms = True  # also log ‖∇L_G‖ of the loss not trained with (one more backward)
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


def validate(config) -> None:
  harness.check_config(
      config, choices={"generator_loss": GENERATOR_LOSSES, "lr_schedule": LR_SCHEDULES,
                       "both_grad_norms": (True, False)},
      ints={"n_critic": 1, "pack": 1, "latent_dim": 0, "base_channels": 1,
            "num_eval_samples": 2, "classifier_steps": 1},
      int_tuples=("g_features", "d_features"),
      ranges={"real_label": "(0, 1]", "r1_weight": "[0, inf)", "d_learning_rate": "[0, inf)",
              "final_lr_fraction": "[0, 1]", "adam_b1": "[0, 1)", "adam_b2": "[0, 1)"})
  need = harness.config_check(config)
  need(is_toy(config) or config.dataset == "digits" or config.dataset.startswith("tfds:"),
       "dataset", "'ring', 'grid', 'digits' or 'tfds:<name>'")
  need(not (config.simultaneous and config.n_critic != 1), "n_critic",
       "1 when simultaneous=True (simultaneous updates have one critic step)")
  for key in ("batch_size", "eval_batch_size"):
    need(config[key] % config.pack == 0, key, f"divisible by pack={config.pack}")
  need(is_toy(config) or config.pixel_format == "symmetric", "pixel_format",
       "'symmetric' for the GAN on images (its generator ends in tanh)")


def eval_latents(config, n: int) -> np.ndarray:
  """The fixed latents every evaluation and picture of a run uses."""
  key = jax.random.fold_in(jax.random.key(config.seed), 20140610)
  return np.asarray(jax.random.normal(key, (n, latent_dim(config))), np.float32)


def load(config) -> tuple[dict, dict, harness.DataInfo]:
  """The ``load=`` hook: the test split gets fixed latents ``z`` (the same fakes every time)."""
  validate(config)
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


def _optimizer(config, lr: float, steps: int) -> optax.GradientTransformation:
  if config.lr_schedule == "cosine":
    lr = optax.cosine_decay_schedule(lr, steps, alpha=config.final_lr_fraction)
  return optax.adam(lr, b1=config.adam_b1, b2=config.adam_b2)


def build_models(config, info: harness.DataInfo | None):
  """(generator, discriminator) Flax modules for the dataset."""
  if is_toy(config):
    return (gan_nn.MLPGenerator(tuple(config.g_features), 2),
            gan_nn.MLPDiscriminator(tuple(config.d_features)))
  return (gan_nn.DCGANGenerator(tuple(info.image_shape), config.base_channels),
          gan_nn.DCGANDiscriminator(config.base_channels))


def make_task(config, info: harness.DataInfo) -> harness.Task:
  validate(config)
  toy_data = is_toy(config)
  if not toy_data:
    harness.config_check(config)(info.image_shape[0] % 4 == 0 and info.image_shape[1] % 4 == 0,
                                 "dataset", "images whose sides are multiples of 4")
  G, D = build_models(config, info)
  dz, m = latent_dim(config), config.pack
  tx_g = _optimizer(config, config.learning_rate, config.num_steps)
  tx_d = _optimizer(config, config.d_learning_rate or config.learning_rate,
                    config.num_steps * config.n_critic)
  g_losses = {"non_saturating": gan_losses.generator_loss_non_saturating,
              "minimax": gan_losses.generator_loss_minimax}
  other_loss = next(k for k in GENERATOR_LOSSES if k != config.generator_loss)
  z_eval = jnp.asarray(eval_latents(config, mc.NUM_SAMPLES))

  def init(key, batch):
    k_g, k_d, k_rng_g, k_rng_d = jax.random.split(key, 4)
    z = jnp.zeros((m, dz), jnp.float32)
    p_g = G.init(k_g, z)
    p_d = D.init(k_d, gan_nn.pack(G.apply(p_g, z), m))
    return {"gen": create_train_state(p_g, tx_g, k_rng_g),
            "disc": create_train_state(p_d, tx_d, k_rng_d)}

  def d_loss_fn(p_d, p_g, x_real, z):
    x_real = gan_nn.pack(x_real, m)
    if config.r1_weight:
      r1, l_real = gan_losses.r1_penalty(lambda x: D.apply(p_d, x), x_real,
                                         gamma=config.r1_weight, return_logits=True)
      penalty = jnp.mean(r1)
    else:
      l_real, penalty = D.apply(p_d, x_real), jnp.zeros((), jnp.float32)
    l_fake = D.apply(p_d, gan_nn.pack(G.apply(p_g, z), m))
    real_loss, fake_loss = gan_losses.discriminator_loss(l_real, l_fake,
                                                         real_label=config.real_label)
    bce = jnp.mean(real_loss) + jnp.mean(fake_loss)
    return bce + penalty, {
        "train/d_loss": bce,  # the BCE alone, so log 4 − d_loss stays the JSD estimate
        "train/r1_penalty": penalty,
        "train/jsd": gan_losses.jsd_estimate(l_real, l_fake),
        "train/d_real": jnp.mean(jax.nn.sigmoid(l_real)),
        "train/d_fake": jnp.mean(jax.nn.sigmoid(l_fake)),
        # Real packs called real (logit > 0) and fake packs called fake, equally weighted.
        "train/d_accuracy": 0.5 * (jnp.mean(l_real > 0) + jnp.mean(l_fake < 0))}

  def g_loss_fn(p_g, p_d, z, loss=config.generator_loss):
    return jnp.mean(g_losses[loss](D.apply(p_d, gan_nn.pack(G.apply(p_g, z), m))))

  def train_step(state, batch):
    gen, disc = state["gen"], state["disc"]
    b = config.batch_size if toy_data else batch["image"].shape[0]

    def draw_real(k):
      return _SAMPLERS[config.dataset](k, b) if toy_data else batch["image"]

    def d_update(disc, k):
      k_real, k_z = jax.random.split(k)
      (_, metrics), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
          disc.params, gen.params, draw_real(k_real), jax.random.normal(k_z, (b, dz)))
      return disc.apply_gradients(grads=grads), metrics

    k_d, k_g = jax.random.split(step_key(gen))
    critic_keys = jax.random.split(k_d, config.n_critic)
    if config.n_critic == 1:
      new_disc, metrics = d_update(disc, critic_keys[0])
    else:
      # Fully unrolled: XLA:CPU runs convolutions inside a loop body several
      # times slower (measured 3-5x for the DCGAN step; a length-1 scan keeps
      # its loop even when unrolled, hence the branch above).
      new_disc, metrics = jax.lax.scan(d_update, disc, critic_keys, unroll=True)
      metrics = jax.tree.map(lambda v: v[-1], metrics)  # the last critic update
    # Simultaneous: the generator's gradient at (G_t, D_t), the old discriminator.
    p_d = disc.params if config.simultaneous else new_disc.params
    z = jax.random.normal(k_g, (b, dz))
    g_loss, grads_g = jax.value_and_grad(g_loss_fn)(gen.params, p_d, z)
    metrics["train/g_loss"] = g_loss
    metrics["train/g_grad_norm"] = optax.tree.norm(grads_g)
    if config.both_grad_norms:
      # The other loss's gradient at the same (G, D, z): measured, never applied.
      other = jax.grad(lambda p: g_loss_fn(p, p_d, z, other_loss))(gen.params)
      metrics[f"train/g_grad_norm_{config.generator_loss}"] = metrics["train/g_grad_norm"]
      metrics[f"train/g_grad_norm_{other_loss}"] = optax.tree.norm(other)
    return {"gen": gen.apply_gradients(grads=grads_g), "disc": new_disc}, metrics

  def eval_step(state, batch):
    """Held-out D loss / JSD on real test data vs fakes from fixed latents."""
    x_real = batch["x"] if toy_data else batch["image"]
    fake = G.apply(state["gen"].params, batch["z"])
    l_real = D.apply(state["disc"].params, gan_nn.pack(x_real, m))
    l_fake = D.apply(state["disc"].params, gan_nn.pack(fake, m))
    real_loss, fake_loss = gan_losses.discriminator_loss(l_real, l_fake)
    d_loss = jnp.repeat(real_loss + fake_loss, m)  # one value per example of a pack
    out = {"d_loss": d_loss, "jsd": 0.5 * (math.log(4.0) - d_loss)}
    if toy_data:
      centers, std = mc.toy_modes(config.dataset)
      _, dist = mc.nearest_mode(fake, centers, std=std)
      out["high_quality"] = (dist <= mc.THRESHOLD).astype(jnp.float32)
    return out

  _generate = jax.jit(lambda params, z: G.apply(params, z))

  def generate(state, z) -> np.ndarray:
    z = np.asarray(z)
    return np.concatenate([np.asarray(_generate(state["gen"].params, z[i : i + 1000]))
                           for i in range(0, len(z), 1000)])

  def scatter(state, title_prefix):
    samples = generate(state, z_eval)
    cov = mc.toy_mode_coverage(jnp.asarray(samples), config.dataset)
    centers, std = mc.toy_modes(config.dataset)
    title = (f"{title_prefix}: {int(cov.modes_covered)}/{len(cov.counts)} modes, "
             f"{100 * float(cov.high_quality_fraction):.1f}% high quality")
    return plots.mode_scatter(samples, np.asarray(centers), std, extent=_EXTENT[config.dataset],
                              title=title), cov

  def images(state, batch):
    if toy_data:
      return {"samples": scatter(state, f"step {int(jax.device_get(state['gen'].step))}")[0]}
    return {"samples": (np.clip(generate(state, batch["z"]), -1.0, 1.0) + 1.0) / 2.0}

  def report(state, ctx: harness.Context):
    hist = ctx.history("train/d_loss", "train/g_loss", "train/jsd")
    if len(hist) == 3:
      ctx.image("curves", plots.line_chart(
          {k.split("/")[1]: v for k, v in hist.items()}, ylabel="nats",
          title=f"GAN losses and the JSD estimate (log 4 − d_loss)/2; final JSD "
          f"{hist['train/jsd'][1][-1]:.3f}", hlines={"log 4": math.log(4.0),
                                                      "log 2": math.log(2.0)}))
    if config.both_grad_norms:
      chart = grad_norm_chart(ctx.history(*GRAD_NORM_KEYS, "train/d_accuracy", "train/d_fake"),
                              config.generator_loss)
      if chart is not None:
        ctx.image("gen_grad_norms", chart)
    if not toy_data:
      model = sample_eval.digit_classifier(ctx.info.dataset, cache_dir=config.classifier_dir
                                           or None, steps=config.classifier_steps)
      fake = (np.clip(generate(state, eval_latents(config, config.num_eval_samples)), -1, 1)
              + 1) / 2
      out = sample_eval.classifier_sample_metrics(fake, ctx.info.dataset, model)
      # Precision/recall and density/coverage against the test digits, in the same features.
      scores = evaluate_samples(fake, sample_eval.unit_images(ctx.info.dataset.test_images),
                                features=model)
      out.update({k: scores[k] for k in ("precision", "recall", "density", "coverage")})
      return out
    _, cov = scatter(state, "final")
    ctx.animate("samples")
    return {"modes_covered": int(cov.modes_covered), "num_modes": len(cov.counts),
            "high_quality_fraction": float(cov.high_quality_fraction),
            "mode_kl": float(cov.mode_kl),
            "mode_counts": [int(c) for c in np.asarray(cov.counts)]}

  return harness.Task(init=init, train_step=train_step, images=images, report=report,
                      evals={"game": harness.Eval(eval_step, during_training=True)})


GRAD_NORM_KEYS = tuple(f"train/g_grad_norm_{k}" for k in GENERATOR_LOSSES)


def grad_norm_chart(hist: dict, trained_with: str) -> np.ndarray | None:
  """‖∇_θ L_G‖ of both generator losses (log scale) above D's accuracy and mean D(G(z)).

  ``hist`` is ``ctx.history(*GRAD_NORM_KEYS, "train/d_accuracy", "train/d_fake")``;
  None when the norms were never logged.
  """
  if not all(k in hist for k in GRAD_NORM_KEYS):
    return None
  names = {"minimax": "minimax (saturating) log(1 − D(G(z)))",
           "non_saturating": "non-saturating −log D(G(z))"}
  final = {k: hist[f"train/g_grad_norm_{k}"][1][-1] for k in GENERATOR_LOSSES}
  top = plots.line_chart(
      {names[k]: hist[f"train/g_grad_norm_{k}"] for k in GENERATOR_LOSSES}, logy=True,
      ylabel="‖∇_θ L_G‖", xlabel="",
      title=f"‖∇_θ L_G‖ of both generator losses at the same (G, D, z); trained with "
      f"{trained_with}\nfinal minimax / non-saturating = "
      f"{final['minimax'] / final['non_saturating']:.3g}")
  lower = {label: hist[key] for label, key in (("D accuracy", "train/d_accuracy"),
                                               ("mean D(G(z))", "train/d_fake")) if key in hist}
  bottom = plots.line_chart(lower, ylabel="", hlines={"chance": 0.5},
                            title="discriminator: accuracy on real vs fake, and D(G(z))")
  return np.concatenate([top, bottom], axis=0)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Programmatic entry point (tests, benchmarks, notebooks)."""
  return harness.train_and_evaluate(config, workdir, make_task, load=load)


def main() -> None:
  """``python -m train.gan`` / ``dgmjax-gan``."""
  harness.run_cli("gan", get_config, make_task, load=load)


if __name__ == "__main__":
  main()
