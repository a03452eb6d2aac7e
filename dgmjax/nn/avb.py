"""Adversarial Variational Bayes networks: implicit encoder and T(x, z).

Lecture 7, slides "Adversarial Variational Bayes" and "Density ratio trick".
AVB replaces the Gaussian encoder of a VAE by an *implicit* one,
z = g_φ(x, ε) with ε ~ N(0, I): a network that turns noise into posterior
samples and has no density. The KL term of the ELBO then has no closed form;
a discriminator T_ψ(x, z), trained to tell (x, z ~ q(z|x)) from
(x, z ~ p(z)) by binary cross-entropy, estimates its integrand, since its
optimum is T*(x, z) = log q(z|x) − log p(z) (the density-ratio trick, see
:mod:`dgmjax.losses.density_ratio`).

* :class:`ImplicitEncoder`: (x, ε) -> z. The noise enters every hidden layer
  through its own linear map (``noise_every_layer=True``) or only the first
  one; either way x is embedded once and broadcast against any number of noise
  draws, so S posterior samples per image cost one x-embedding.
* :class:`Discriminator`: (x, z) -> the logit T(x, z), with the analytic
  −log N(z; 0, I) = ‖z‖²/2 added to the network output by default
  (``add_prior_term``), as in the reference implementation: the network then
  only has to learn log q(z|x) up to a constant.
* The decoder is the Gaussian VAE's :class:`dgmjax.nn.vae.MLPDecoder`
  (re-exported here), so AVB and the Gaussian-encoder VAE can be compared with
  the very same decoder.

All modules accept images ``(B, H, W, C)`` (flattened inside) and latent or
noise arrays with extra leading sample axes ``(S, B, ·)``.

References:
  Mescheder, Nowozin, Geiger, "Adversarial Variational Bayes: Unifying
  Variational Autoencoders and Generative Adversarial Networks", ICML 2017,
  https://arxiv.org/abs/1701.04722
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax.losses.density_ratio import add_prior_log_density
from dgmjax.nn.vae import MLPDecoder, MLPEncoder

__all__ = [
    "Discriminator",
    "ImplicitEncoder",
    "MLPDecoder",
    "MLPEncoder",
    "ACTIVATIONS",
    "sample_noise",
]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "elu": nn.elu,
    "softplus": nn.softplus,
    "tanh": jnp.tanh,
    "leaky_relu": nn.leaky_relu,
}


def _flat_images(name: str, x: jax.Array) -> jax.Array:
  if x.ndim < 4:
    raise ValueError(f"{name} must be images of shape (B, H, W, C), got shape {x.shape}.")
  return x.reshape(x.shape[:-3] + (-1,))


def _check_leading(name: str, a: jax.Array, x_flat: jax.Array) -> None:
  """``a`` is (..., B, ·) with the batch axis of x (B, D) second from the end."""
  if a.ndim < 2 or a.shape[-2] != x_flat.shape[-2]:
    raise ValueError(
        f"{name} must have shape (..., B, {name}_dim) with B = {x_flat.shape[-2]} "
        f"(the batch of x), got {a.shape}.")


class ImplicitEncoder(nn.Module):
  """Implicit posterior sampler z = g(x, ε): images and noise -> latents.

  h₁ = act(W₁ x + V₁ ε + b₁), h_l = act(W_l h_{l−1} + V_l ε + b_l),
  z = W_out h_L + V_out ε + b_out,

  where the V_l ε terms after the first layer exist only with
  ``noise_every_layer``. The induced q(z|x) = ∫ δ(z − g(x, ε)) N(ε; 0, I) dε
  can be any shape (multi-modal, bounded, a quadrant of the plane); it has no
  tractable density, which is why AVB needs the discriminator.

  Attributes:
    latent_dim: size d of z.
    hidden: widths of the hidden layers.
    noise_every_layer: inject ε into every layer (including the output), not
      only the first.
    activation: hidden non-linearity.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> enc = ImplicitEncoder(latent_dim=2, hidden=(16,))
    >>> x = jnp.zeros((3, 2, 2, 1))
    >>> eps = jax.random.normal(jax.random.key(0), (5, 3, 4))  # 5 draws per image
    >>> z = enc.apply(enc.init(jax.random.key(1), x, eps), x, eps)
    >>> print(z.shape)
    (5, 3, 2)
  """

  latent_dim: int
  hidden: Sequence[int] = (256, 256)
  noise_every_layer: bool = True
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array, eps: jax.Array) -> jax.Array:
    """x (B, H, W, C), eps (..., B, e) -> z (..., B, latent_dim)."""
    h = _flat_images("x", x)
    _check_leading("eps", eps, h)
    if not self.hidden:
      raise ValueError("ImplicitEncoder needs at least one hidden layer.")
    for i, width in enumerate(self.hidden):
      pre = nn.Dense(width, name=f"x_{i}")(h)
      if i == 0 or self.noise_every_layer:
        # Broadcast: the x path is computed once per image, ε per draw.
        pre = pre + nn.Dense(width, use_bias=False, name=f"noise_{i}")(eps)
      h = self.activation(pre)
    z = nn.Dense(self.latent_dim, name="out")(h)
    if self.noise_every_layer:
      z = z + nn.Dense(self.latent_dim, use_bias=False, name="noise_out")(eps)
    return z


class Discriminator(nn.Module):
  """The AVB adversary T(x, z), one logit per (x, z) pair.

  T(x, z) = f(act(… act(A e(x) + B z + c) …)) [+ ‖z‖²/2],

  with e(x) an optional MLP embedding of the image alone (``x_hidden``). x and
  z meet in the first joint layer, so T can represent log q(z|x), which
  depends on both (a T that sees only z cannot). Train it with
  :func:`dgmjax.losses.density_ratio.avb_discriminator_loss` (posterior
  samples labelled 1); at the optimum T*(x, z) = log q(z|x) − log p(z).
  With ``add_prior_term`` the output includes the analytic −log N(z; 0, I)
  up to its constant (:func:`~dgmjax.losses.density_ratio.add_prior_log_density`),
  which is exactly the part of T* that a finite network extrapolates worst.

  Attributes:
    hidden: widths of the joint (x, z) layers.
    x_hidden: widths of the layers that embed x before it meets z (may be
      empty: x enters the first joint layer directly).
    add_prior_term: add ‖z‖²/2 to the network's logit.
    activation: hidden non-linearity.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> disc = Discriminator(hidden=(8,), add_prior_term=True)
    >>> x, z = jnp.zeros((3, 2, 2, 1)), jnp.ones((3, 2))
    >>> params = disc.init(jax.random.key(0), x, z)
    >>> params = jax.tree.map(jnp.zeros_like, params)  # T_net = 0
    >>> print(disc.apply(params, x, z))  # only ‖z‖²/2 remains
    [1. 1. 1.]
  """

  hidden: Sequence[int] = (256, 256)
  x_hidden: Sequence[int] = ()
  add_prior_term: bool = True
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
    """x (B, H, W, C), z (..., B, d) -> T (..., B)."""
    h_x = _flat_images("x", x)
    _check_leading("z", z, h_x)
    if not self.hidden:
      raise ValueError("Discriminator needs at least one joint hidden layer.")
    for i, width in enumerate(self.x_hidden):
      h_x = self.activation(nn.Dense(width, name=f"x_{i}")(h_x))
    h = self.activation(nn.Dense(self.hidden[0], name="joint_x")(h_x)
                        + nn.Dense(self.hidden[0], use_bias=False, name="joint_z")(z))
    for i, width in enumerate(self.hidden[1:]):
      h = self.activation(nn.Dense(width, name=f"joint_{i + 1}")(h))
    t = nn.Dense(1, name="logit")(h)[..., 0]
    if self.add_prior_term:
      t = add_prior_log_density(t, z)
    return t


def sample_noise(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
  """ε ~ N(0, I) of ``shape``: the base noise of :class:`ImplicitEncoder`.

  Example:
    >>> import jax
    >>> print(sample_noise(jax.random.key(0), (4, 3, 8)).shape)
    (4, 3, 8)
  """
  return jax.random.normal(key, tuple(shape), dtype)
