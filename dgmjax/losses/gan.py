"""GAN losses from discriminator logits (Goodfellow et al. 2014).

Lecture 7, slides "Generative adversarial network (GAN) objective" and "GAN
optimality". The discriminator outputs a logit ``l`` with ``D = sigmoid(l)``,
the probability that ``x`` is real. Every log-probability is a softplus of a
logit::

  -log D       = softplus(-l)
  -log(1 - D)  = softplus(l)

which is exact for logits of ``±1e4`` (``softplus(1e4) = 1e4``) with finite
gradients; ``log(sigmoid(l) + 1e-8)`` would cap the loss at ``18.4`` and kill
its gradient.

Real and fake batches may have different sizes, so the per-example losses are
returned separately (:func:`discriminator_loss`); the functions that reduce
(:func:`discriminator_loss_mean`, :func:`jsd_estimate`) average each batch on
its own and take ``axis_name`` to average across devices.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from dgmjax import _checks
from dgmjax.parallel import global_mean

__all__ = [
    "discriminator_loss",
    "discriminator_loss_mean",
    "generator_loss_minimax",
    "generator_loss_non_saturating",
    "jsd_estimate",
    "r1_penalty",
]


def _check_logits(name: str, logits: Any) -> None:
  _checks.check_floating(name, logits)
  if jnp.size(logits) == 0:
    raise ValueError(f"{name} must not be empty, got shape {jnp.shape(logits)}.")


def discriminator_loss(
    real_logits: jax.Array,
    fake_logits: jax.Array,
    *,
    real_label: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
  """Per-example discriminator cross-entropy on real and on fake examples.

  ``BCE(l, t) = -t log sigmoid(l) - (1 - t) log(1 - sigmoid(l))
  = (1 - t) softplus(l) + t softplus(-l)``, with target ``t = real_label``
  for real examples and ``t = 0`` for fake ones. ``real_label < 1`` is
  one-sided label smoothing (fake targets stay 0). With ``real_label = 1``:
  ``real_loss = softplus(-l_real) = -log D(x)`` and
  ``fake_loss = softplus(l_fake) = -log(1 - D(G(z)))``.

  Lecture 7, slide "Generative adversarial network (GAN) objective": the
  discriminator maximises ``E_pi log D(x) + E_p log(1 - D(x))``, i.e.
  minimises ``mean(real_loss) + mean(fake_loss)`` (see
  :func:`discriminator_loss_mean`).

  Args:
    real_logits: discriminator logits on real data, any shape.
    fake_logits: discriminator logits on generated data, any shape (the batch
      may differ from the real one).
    real_label: target for real examples, in ``(0, 1]``; e.g. 0.9.

  Returns:
    ``(real_loss, fake_loss)``, shaped like ``real_logits`` and
    ``fake_logits``. Reduce each batch separately: ``real_loss.mean() +
    fake_loss.mean()``.

  References:
    Goodfellow et al., `Generative Adversarial Networks
    <https://arxiv.org/abs/1406.2661>`_, 2014;
    Salimans et al., `Improved Techniques for Training GANs
    <https://arxiv.org/abs/1606.03498>`_, 2016 (one-sided label smoothing).

  Example:
    >>> real_loss, fake_loss = discriminator_loss(
    ...     jnp.array([0.0, 2.0]), jnp.array([0.0]))
    >>> print(jnp.round(real_loss, 4), jnp.round(fake_loss, 4))
    [0.6931 0.1269] [0.6931]
  """
  _check_logits("real_logits", real_logits)
  _check_logits("fake_logits", fake_logits)
  _checks.check_rank("real_label", real_label, 0)
  _checks.check_positive("real_label", real_label)
  _checks.check_in_range("real_label", real_label, 0.0, 1.0)
  # optax computes -t log_sigmoid(l) - (1 - t) log_sigmoid(-l) = t softplus(-l)
  # + (1 - t) softplus(l), not softplus(l) - t l: the two forms are equal, but
  # this one is exact when t is 0 or 1 and |l| is large.
  real_loss = optax.sigmoid_binary_cross_entropy(
      jnp.asarray(real_logits), real_label)
  fake_loss = optax.sigmoid_binary_cross_entropy(jnp.asarray(fake_logits), 0.0)
  return real_loss, fake_loss


def discriminator_loss_mean(
    real_logits: jax.Array,
    fake_logits: jax.Array,
    *,
    real_label: float = 1.0,
    axis_name: str | None = None,
) -> jax.Array:
  """Discriminator loss ``mean(real_loss) + mean(fake_loss)``, a scalar.

  ``L_D = E_pi softplus(-l) + E_p softplus(l) = -V(G, D)`` (with
  ``real_label = 1``), each expectation estimated by the mean over its own
  batch. The convenience reduction of :func:`discriminator_loss`.

  Lecture 7, slide "Generative adversarial network (GAN) objective".

  Args:
    real_logits: discriminator logits on real data, any shape.
    fake_logits: discriminator logits on generated data, any shape.
    real_label: target for real examples, in ``(0, 1]``.
    axis_name: if given (inside ``shard_map``/``pmap``), the means run over
      the examples of all devices on this axis.

  Returns:
    Scalar loss.

  References:
    Goodfellow et al., `Generative Adversarial Networks
    <https://arxiv.org/abs/1406.2661>`_, 2014.

  Example:
    >>> loss = discriminator_loss_mean(jnp.array([0.0, 0.0]), jnp.array([0.0]))
    >>> print(f"{float(loss):.4f}")  # log 4 when D = 1/2 everywhere
    1.3863
  """
  real_loss, fake_loss = discriminator_loss(
      real_logits, fake_logits, real_label=real_label
  )
  return global_mean(real_loss, axis_name) + global_mean(fake_loss, axis_name)


def generator_loss_minimax(fake_logits: jax.Array) -> jax.Array:
  """Per-example saturating (minimax) generator loss, ``log(1 - D(G(z)))``.

  ``log(1 - sigmoid(l)) = -softplus(l)``, to be minimised. Its gradient
  ``d/dl = -sigmoid(l)`` vanishes when the discriminator confidently rejects
  the fakes (``l << 0``), which is why it saturates early in training.

  Lecture 7, slide "Generative adversarial network (GAN) objective":
  ``min_G E_p(z) log(1 - D(G(z)))``.

  Args:
    fake_logits: discriminator logits on generated data, any shape.

  Returns:
    Loss per element, shaped like ``fake_logits``.

  References:
    Goodfellow et al., `Generative Adversarial Networks
    <https://arxiv.org/abs/1406.2661>`_, 2014, section 3.

  Example:
    >>> print(jnp.round(generator_loss_minimax(jnp.array([-2.0, 0.0])), 4))
    [-0.1269 -0.6931]
  """
  _check_logits("fake_logits", fake_logits)
  return -jax.nn.softplus(fake_logits)


def generator_loss_non_saturating(fake_logits: jax.Array) -> jax.Array:
  """Per-example non-saturating generator loss, ``-log D(G(z))``.

  ``-log sigmoid(l) = softplus(-l)``, to be minimised. Same fixed point as
  the minimax loss, but its gradient ``d/dl = -sigmoid(-l)`` is close to -1
  when the discriminator confidently rejects the fakes.

  Lecture 7, slide "Generative adversarial network (GAN) objective" (the
  generator's side of the game; the non-saturating variant is the one
  Goodfellow et al. recommend in practice).

  Args:
    fake_logits: discriminator logits on generated data, any shape.

  Returns:
    Loss per element, shaped like ``fake_logits``.

  References:
    Goodfellow et al., `Generative Adversarial Networks
    <https://arxiv.org/abs/1406.2661>`_, 2014, section 3.

  Example:
    >>> print(jnp.round(generator_loss_non_saturating(jnp.array([-2.0, 0.0])), 4))
    [2.1269 0.6931]
  """
  _check_logits("fake_logits", fake_logits)
  return jax.nn.softplus(-fake_logits)


def jsd_estimate(
    real_logits: jax.Array,
    fake_logits: jax.Array,
    *,
    axis_name: str | None = None,
) -> jax.Array:
  """Estimates ``JSD(pi || p)`` (nats) from discriminator logits.

  At the optimal discriminator ``D* = pi / (pi + p)``,
  ``V(G, D*) = 2 JSD(pi || p) - 2 log 2`` and ``V = -L_D`` with
  ``L_D = E_pi softplus(-l) + E_p softplus(l)``, so
  ``JSD ~= (log 4 - L_D) / 2``. For any other discriminator ``V(G, D) <=
  V(G, D*)``, so in expectation this is a lower bound on the JSD, tight at
  ``D*``; it can be negative for a poor discriminator. The JSD lies in
  ``[0, log 2]``.

  Lecture 7, slide "GAN optimality".

  Args:
    real_logits: discriminator logits on real data, any shape.
    fake_logits: discriminator logits on generated data, any shape.
    axis_name: if given, average over the examples of all devices on this
      axis (inside ``shard_map``/``pmap``).

  Returns:
    Scalar estimate.

  References:
    Goodfellow et al., `Generative Adversarial Networks
    <https://arxiv.org/abs/1406.2661>`_, 2014, theorem 1;
    Nowozin, Cseke, Tomioka, `f-GAN <https://arxiv.org/abs/1606.00709>`_, 2016.

  Example:
    >>> # A discriminator that cannot tell the samples apart: JSD estimate 0.
    >>> print(f"{float(jsd_estimate(jnp.zeros(3), jnp.zeros(5))):.4f}")
    0.0000
  """
  d_loss = discriminator_loss_mean(real_logits, fake_logits, axis_name=axis_name)
  return 0.5 * (math.log(4.0) - d_loss)


def r1_penalty(
    disc_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    *,
    gamma: float | jax.Array,
    return_logits: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Per-example R1 gradient penalty on real data, ``gamma/2 ||grad_x D(x)||^2``.

  ``R1(x_i) = gamma / 2 * ||d l(x_i) / d x_i||^2`` with ``l = disc_fn(x)`` the
  discriminator's logits on real examples; add ``mean(R1)`` to the
  discriminator loss. Penalising the gradient on the data manifold keeps the
  discriminator from growing arbitrarily sharp around the real samples, which
  makes simultaneous gradient descent converge locally (Mescheder et al.).

  All gradients come from one VJP of ``sum_i l_i``, which equals the
  per-example gradients only when each logit depends on its own example
  alone: no batch normalisation or minibatch statistics inside ``disc_fn``
  (a PacGAN discriminator over packed inputs is fine: a packed group is one
  example). The squared norm is accumulated in at least float32.

  Args:
    disc_fn: ``x -> logits`` of shape ``(B,)``, e.g.
      ``lambda x: D.apply(params, x)``.
    x: real examples, shape ``(B, ...)``, floating.
    gamma: the penalty weight, ``>= 0``.
    return_logits: also return ``disc_fn(x)``, computed in the same forward
      pass (so a training step does not evaluate the discriminator twice).

  Returns:
    Penalty per example, shape ``(B,)``; with ``return_logits``,
    ``(penalty, logits)``.

  References:
    Mescheder, Geiger, Nowozin, `Which Training Methods for GANs do actually
    Converge? <https://arxiv.org/abs/1801.04406>`_, 2018, section 4.1 (R1).

  Example:
    >>> # Linear D(x) = w . x: the gradient is w, so R1 = gamma/2 ||w||^2.
    >>> w = jnp.array([3.0, 4.0])
    >>> print(r1_penalty(lambda x: x @ w, jnp.ones((2, 2)), gamma=0.1))
    [1.25 1.25]
  """
  _checks.check_floating("x", x)
  _checks.check_min_rank("x", x, 1)
  _checks.check_rank("gamma", gamma, 0)
  _checks.check_positive("gamma", gamma, allow_zero=True)
  x = jnp.asarray(x)
  logits, vjp = jax.vjp(disc_fn, x)
  if jnp.shape(logits) != x.shape[:1]:
    raise ValueError(
        f"disc_fn(x) must return one logit per example, shape {x.shape[:1]}, "
        f"got {jnp.shape(logits)}."
    )
  # Each logit depends on its own example only, so the gradient of the sum
  # holds every per-example gradient at once.
  (grad_x,) = vjp(jnp.ones_like(logits))
  acc = jnp.promote_types(grad_x.dtype, jnp.float32)
  sq_norm = jnp.sum(
      jnp.square(grad_x.astype(acc)).reshape(x.shape[0], -1), axis=-1)
  penalty = 0.5 * gamma * sq_norm
  return (penalty, logits) if return_logits else penalty
