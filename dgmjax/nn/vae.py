"""Gaussian-encoder VAE building blocks: MLP and convolutional variants.

Lecture 7, slide "ELBO": the encoder q(z|x, φ) = N(μ_φ(x), diag σ²_φ(x)) and
the decoder p(x|z, θ), here a network from z to one value per pixel (Bernoulli
logits, or Gaussian means). Encoders return ``(mean, log_var)``; decoders
accept z with any leading sample axes (e.g. ``(k, B, d)`` for an IWAE bound)
and return ``(*leading, H, W, C)``.

The convolutional pair wraps :class:`dgmjax.nn.conv.ConvEncoder` /
:class:`dgmjax.nn.conv.ConvDecoder` (28×28 → 7×7 feature grid and back) with
dense layers between the grid and the latent vector.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax import rng
from dgmjax.nn.conv import ConvDecoder, ConvEncoder

ARCHS = ("mlp", "conv")


def _check_image(x: jax.Array, image_shape: Sequence[int] | None = None) -> None:
  if x.ndim < 4:
    raise ValueError(f"x must be images of shape (B, H, W, C), got shape {x.shape}.")
  if image_shape is not None and tuple(x.shape[-3:]) != tuple(image_shape):
    raise ValueError(f"x must have image shape {tuple(image_shape)}, got {x.shape}.")


class _GaussianHead(nn.Module):
  latent_dim: int

  @nn.compact
  def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    mean = nn.Dense(self.latent_dim, name="mean")(h)
    log_var = nn.Dense(self.latent_dim, name="log_var")(h)
    return mean, log_var


class MLPEncoder(nn.Module):
  """(B, H, W, C) images -> (mean, log_var), each (B, latent_dim).

  Attributes:
    latent_dim: size d of z.
    hidden: widths of the hidden layers (ReLU).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> enc = MLPEncoder(latent_dim=2, hidden=(16,))
    >>> x = jnp.zeros((3, 28, 28, 1))
    >>> mean, log_var = enc.apply(enc.init(jax.random.key(0), x), x)
    >>> print(mean.shape, log_var.shape)
    (3, 2) (3, 2)
  """

  latent_dim: int
  hidden: Sequence[int] = (512, 256)

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    _check_image(x)
    h = x.reshape(x.shape[:-3] + (-1,))
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    return _GaussianHead(self.latent_dim)(h)


class MLPDecoder(nn.Module):
  """z (..., d) -> per-pixel outputs (..., H, W, C) (logits or means).

  Attributes:
    image_shape: (H, W, C) of the images.
    hidden: widths of the hidden layers (ReLU), from z upwards.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> dec = MLPDecoder(image_shape=(28, 28, 1), hidden=(16,))
    >>> z = jnp.zeros((5, 3, 2))  # 5 samples for each of 3 images
    >>> print(dec.apply(dec.init(jax.random.key(0), z), z).shape)
    (5, 3, 28, 28, 1)
  """

  image_shape: tuple[int, int, int]
  hidden: Sequence[int] = (256, 512)

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h = z
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    out = nn.Dense(math.prod(self.image_shape))(h)
    return out.reshape(z.shape[:-1] + tuple(self.image_shape))


class ConvGaussianEncoder(nn.Module):
  """(B, H, W, C) -> (mean, log_var) through a strided-conv feature grid.

  H and W must be multiples of 4 (28×28 -> 7×7 features).

  Attributes:
    latent_dim: size d of z.
    channels: channels of the two stride-2 convolutions.
    num_res_blocks: residual blocks at the 7×7 resolution.
    res_hidden: hidden channels of each residual block.
    features: channels of the grid that is flattened into the dense head.
  """

  latent_dim: int
  channels: Sequence[int] = (32, 64)
  num_res_blocks: int = 1
  res_hidden: int = 32
  features: int = 16

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    _check_image(x)
    lead = x.shape[:-3]
    x = x.reshape((-1,) + x.shape[-3:])
    h = ConvEncoder(tuple(self.channels), self.num_res_blocks, self.res_hidden,
                    self.features)(x)
    h = nn.relu(h.reshape(h.shape[0], -1))
    mean, log_var = _GaussianHead(self.latent_dim)(h)
    return mean.reshape(lead + (-1,)), log_var.reshape(lead + (-1,))


class ConvGaussianDecoder(nn.Module):
  """z (..., d) -> (..., H, W, C) through a dense layer and transposed convs.

  Attributes:
    image_shape: (H, W, C); H and W multiples of 4.
    channels: channels from the coarse grid upwards (as ConvDecoder).
    num_res_blocks: residual blocks at the coarse resolution.
    res_hidden: hidden channels of each residual block.
    features: channels of the coarse (H/4, W/4) grid the dense layer fills.
  """

  image_shape: tuple[int, int, int]
  channels: Sequence[int] = (64, 32)
  num_res_blocks: int = 1
  res_hidden: int = 32
  features: int = 16

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h_img, w_img, c_img = self.image_shape
    if h_img % 4 or w_img % 4:
      raise ValueError(f"image_shape height and width must be multiples of 4, "
                       f"got {tuple(self.image_shape)}.")
    lead = z.shape[:-1]
    grid = (h_img // 4, w_img // 4, self.features)
    h = nn.relu(nn.Dense(math.prod(grid))(z.reshape(-1, z.shape[-1])))
    h = h.reshape((-1,) + grid)
    out = ConvDecoder(tuple(self.channels), self.num_res_blocks, self.res_hidden,
                      c_img)(h)
    return out.reshape(lead + tuple(self.image_shape))


def make_encoder_decoder(
    arch: str,
    *,
    image_shape: tuple[int, int, int],
    latent_dim: int,
    hidden: Sequence[int] = (512, 256),
    channels: Sequence[int] = (32, 64),
    num_res_blocks: int = 1,
    res_hidden: int = 32,
) -> tuple[nn.Module, nn.Module]:
  """The encoder/decoder pair of an architecture, mirrored.

  ``hidden`` and ``channels`` are given encoder-side (input to latent); the
  decoder uses them reversed.

  Args:
    arch: ``"mlp"`` or ``"conv"``.
    image_shape: (H, W, C).
    latent_dim: size d of z (>= 1).
    hidden: MLP widths (``arch="mlp"``).
    channels: conv channels (``arch="conv"``).
    num_res_blocks: residual blocks (``arch="conv"``).
    res_hidden: residual-block width (``arch="conv"``).

  Returns:
    ``(encoder, decoder)`` Flax modules.

  Example:
    >>> enc, dec = make_encoder_decoder("mlp", image_shape=(28, 28, 1),
    ...                                 latent_dim=8, hidden=(64, 32))
    >>> print(type(enc).__name__, dec.hidden)
    MLPEncoder (32, 64)
  """
  if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
    raise ValueError(f"latent_dim must be an int >= 1, got {latent_dim!r}.")
  image_shape = tuple(int(s) for s in image_shape)
  if len(image_shape) != 3:
    raise ValueError(f"image_shape must be (H, W, C), got {image_shape}.")
  if arch == "mlp":
    hidden = tuple(int(h) for h in hidden)
    return (MLPEncoder(latent_dim, hidden),
            MLPDecoder(image_shape, tuple(reversed(hidden))))
  if arch == "conv":
    if image_shape[0] % 4 or image_shape[1] % 4:
      raise ValueError(f"image_shape height and width must be multiples of 4 for "
                       f"arch='conv', got {image_shape}.")
    channels = tuple(int(c) for c in channels)
    return (ConvGaussianEncoder(latent_dim, channels, num_res_blocks, res_hidden),
            ConvGaussianDecoder(image_shape, tuple(reversed(channels)), num_res_blocks,
                                res_hidden))
  raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}.")


def reparameterize(
    key: jax.Array, mean: jax.Array, log_var: jax.Array, num_samples: int | None = None
) -> jax.Array:
  """z = μ + σ·ε with ε ~ N(0, I): a reparameterised sample of q(z|x).

  Args:
    key: PRNG key.
    mean: (B, d) posterior means.
    log_var: (B, d) posterior log-variances.
    num_samples: None for one sample of shape (B, d); k for (k, B, d).

  Returns:
    Samples z.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> z = reparameterize(jax.random.key(0), jnp.zeros((4, 2)),
    ...                    jnp.full((4, 2), -60.0), num_samples=3)
    >>> print(z.shape, float(jnp.abs(z).max()) < 1e-12)
    (3, 4, 2) True
  """
  if mean.shape != log_var.shape:
    raise ValueError(f"log_var must have the shape of mean, got {log_var.shape} vs "
                     f"{mean.shape}.")
  shape = mean.shape if num_samples is None else (num_samples,) + mean.shape
  eps = rng.normal(key, shape, mean.dtype)  # jax.random.normal's numbers
  return mean + jnp.exp(0.5 * log_var) * eps
