"""Generators and discriminators for the GAN lesson (Lecture 7).

Lecture 7, slides "Generative adversarial network (GAN) objective" and "GAN
training": the generator is a deterministic map ``x = G(z, θ)`` of base noise
``z ~ N(0, I)`` (a "deterministic decoder" with no encoder); the
discriminator ``D(x, φ) = sigmoid(logit)`` is a binary classifier. Every
discriminator here returns the *logit*, shape ``(B,)``; the losses in
:mod:`dgmjax.losses.gan` take logits.

* :class:`MLPGenerator`, :class:`MLPDiscriminator`: for the 2-D ring/grid
  mode-collapse benchmarks (VEEGAN, PacGAN).
* :class:`DCGANGenerator`, :class:`DCGANDiscriminator`: DCGAN-style
  convolutional nets (Radford et al. 2016) for 28×28 (or any H, W divisible
  by 4) images in ``[-1, 1]``. Strided (transposed) convolutions, LeakyReLU in
  D, ReLU + tanh in G. The generator normalises with LayerNorm rather than
  BatchNorm: the nets then have no batch statistics, so a generated sample
  does not depend on the rest of its batch, there is no train/eval mode and a
  sharded step equals a single-device one without cross-device statistics.
* :func:`pack`: PacGAN packing (Lin et al. 2018). The discriminator judges
  ``m`` samples at once, concatenated along the feature (or channel) axis, all
  real or all generated; a collapsed generator produces packs of
  near-identical samples, which the discriminator learns to reject.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax import _checks, rng
from dgmjax.nn.batch_slices import apply_in_slices
from dgmjax.nn.conv_transpose import ConvTranspose

__all__ = [
    "DCGANDiscriminator",
    "DCGANGenerator",
    "MLPDiscriminator",
    "MLPGenerator",
    "pack",
]


def pack(x: jax.Array, pack_size: int) -> jax.Array:
  """Group consecutive samples into PacGAN packs.

  ``(B, d) -> (B/m, m·d)`` for vectors and ``(B, H, W, C) -> (B/m, H, W, m·C)``
  for images: pack ``j`` holds samples ``j·m, …, j·m + m − 1``. With
  ``pack_size = 1`` this is the identity.

  Args:
    x: samples, rank 2 ``(B, d)`` or rank 4 ``(B, H, W, C)``.
    pack_size: m >= 1; must divide B.

  Returns:
    The packed array.

  References:
    Lin, Khetan, Fanti, Oh, `PacGAN: The power of two samples in generative
    adversarial networks <https://arxiv.org/abs/1712.04086>`_, NeurIPS 2018.

  Example:
    >>> x = jnp.arange(8.0).reshape(4, 2)
    >>> print(pack(x, 2))
    [[0. 1. 2. 3.]
     [4. 5. 6. 7.]]
  """
  _checks.check_int_at_least("pack_size", pack_size, 1)
  _checks.check_rank("x", x, (2, 4))
  b = x.shape[0]
  if b % pack_size:
    raise ValueError(f"the batch size {b} of x must be divisible by pack_size={pack_size}.")
  if pack_size == 1:
    return x
  if x.ndim == 2:
    return x.reshape(b // pack_size, pack_size * x.shape[1])
  _, h, w, c = x.shape
  x = x.reshape(b // pack_size, pack_size, h, w, c)
  return jnp.moveaxis(x, 1, 3).reshape(b // pack_size, h, w, pack_size * c)


class MLPGenerator(nn.Module):
  """``z (B, latent) -> x (B, out_dim)``: an MLP with ReLU hidden layers.

  The output layer is linear: the 2-D targets are unbounded.

  Example:
    >>> g = MLPGenerator(features=(8, 8), out_dim=2)
    >>> params = g.init(jax.random.key(0), jnp.zeros((1, 3)))
    >>> print(g.apply(params, jnp.zeros((5, 3))).shape)
    (5, 2)
  """

  features: Sequence[int] = (256, 256, 256)
  out_dim: int = 2

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h = z
    for width in self.features:
      h = nn.relu(nn.Dense(width)(h))
    return nn.Dense(self.out_dim)(h)


class MLPDiscriminator(nn.Module):
  """``x (B, d) -> logit (B,)``: an MLP with LeakyReLU(0.2) hidden layers.

  Example:
    >>> d = MLPDiscriminator(features=(8,))
    >>> params = d.init(jax.random.key(0), jnp.zeros((1, 2)))
    >>> print(d.apply(params, jnp.zeros((5, 2))).shape)
    (5,)
  """

  features: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x
    for width in self.features:
      h = nn.leaky_relu(nn.Dense(width)(h), 0.2)
    return nn.Dense(1)(h)[..., 0]


class DCGANGenerator(nn.Module):
  """``z (B, latent) -> images (B, H, W, C)`` in ``[-1, 1]`` (tanh).

  Dense to an ``(H/4, W/4, 2·base)`` map, then two stride-2 transposed
  convolutions (``4×4`` kernels) double the resolution twice. LayerNorm +
  ReLU after every hidden layer (see the module docstring for why not
  BatchNorm).

  Example:
    >>> g = DCGANGenerator(image_shape=(28, 28, 1), base_channels=4)
    >>> params = g.init(jax.random.key(0), jnp.zeros((1, 8)))
    >>> x = g.apply(params, jax.random.normal(jax.random.key(1), (2, 8)))
    >>> print(x.shape, bool(jnp.all(jnp.abs(x) <= 1.0)))
    (2, 28, 28, 1) True
  """

  image_shape: Sequence[int] = (28, 28, 1)
  base_channels: int = 64
  batch_slices: int | str = "auto"  # dgmjax.nn.batch_slices: concurrent slices on CPU

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h_img, w_img, c_img = self.image_shape
    if h_img % 4 or w_img % 4:
      raise ValueError(f"image_shape height and width must be multiples of 4, "
                       f"got {tuple(self.image_shape)}.")
    h, w, ch = h_img // 4, w_img // 4, 2 * self.base_channels
    dense, norm0 = nn.Dense(h * w * ch), nn.LayerNorm()
    # flax's ConvTranspose with its parameter names, computed per output phase
    # where that is faster on CPU (dgmjax.nn.conv_transpose).
    up0 = ConvTranspose(self.base_channels, (4, 4), strides=(2, 2), padding="SAME",
                        name="ConvTranspose_0")
    norm1 = nn.LayerNorm()
    up1 = ConvTranspose(c_img, (4, 4), strides=(2, 2), padding="SAME", name="ConvTranspose_1")

    def net(z):
      x = dense(z).reshape(z.shape[0], h, w, ch)
      x = up0(nn.relu(norm0(x)))
      return jnp.tanh(up1(nn.relu(norm1(x))))

    return apply_in_slices(net, z, self.batch_slices)


class DCGANDiscriminator(nn.Module):
  """``images (B, H, W, C) -> logit (B,)``.

  Two stride-2 ``4×4`` convolutions with LeakyReLU(0.2), no normalisation
  (a per-example critic), then a linear layer to one logit.

  Example:
    >>> d = DCGANDiscriminator(base_channels=4)
    >>> params = d.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    >>> print(d.apply(params, jnp.zeros((3, 28, 28, 1))).shape)
    (3,)
  """

  base_channels: int = 64
  batch_slices: int | str = "auto"  # dgmjax.nn.batch_slices: concurrent slices on CPU

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pad = ((1, 1), (1, 1))
    init = rng.default_kernel_init  # flax's default, compiled faster on CPU
    conv0 = nn.Conv(self.base_channels, (4, 4), strides=(2, 2), padding=pad, kernel_init=init)
    conv1 = nn.Conv(2 * self.base_channels, (4, 4), strides=(2, 2), padding=pad,
                    kernel_init=init)
    head = nn.Dense(1)

    def net(x):
      x = nn.leaky_relu(conv1(nn.leaky_relu(conv0(x), 0.2)), 0.2)
      return head(x.reshape(x.shape[0], -1))[..., 0]

    return apply_in_slices(net, x, self.batch_slices)
