"""Convolutional encoder/decoder for 28×28 and 32×32 images.

Two stride-2 convolutions take 28×28 to a 7×7 grid (32×32 to 8×8); residual
blocks follow, as in the VQ-VAE paper's image models (van den Oord et al.
2017, section 4.1), scaled down for small images.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from dgmjax import rng
from dgmjax.nn.batch_slices import apply_in_slices
from dgmjax.nn.conv_transpose import ConvTranspose

# flax's default kernel initialiser, the same numbers, compiled in a fraction of the
# time on CPU (dgmjax.rng).
_KERNEL_INIT = rng.default_kernel_init


class ResBlock(nn.Module):
  """x + Conv1x1(relu(Conv3x3(relu(x)))) — the VQ-VAE residual block."""

  hidden: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.relu(x)
    h = nn.Conv(self.hidden, (3, 3), kernel_init=_KERNEL_INIT)(h)
    h = nn.relu(h)
    h = nn.Conv(x.shape[-1], (1, 1), kernel_init=_KERNEL_INIT)(h)
    return x + h


class ConvEncoder(nn.Module):
  """(B, H, W, C) -> (B, H/4, W/4, out_dim).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from dgmjax.nn.conv import ConvEncoder
    >>> enc = ConvEncoder(channels=(4, 8), num_res_blocks=1, res_hidden=4, out_dim=3)
    >>> x = jax.random.normal(jax.random.key(0), (2, 28, 28, 1))
    >>> params = enc.init(jax.random.key(1), x)
    >>> # No statistics across the batch: an image's code does not depend on the others.
    >>> z, z0 = enc.apply(params, x), enc.apply(params, x[:1])
    >>> print(z.shape, bool(jnp.allclose(z[:1], z0, atol=1e-6)))
    (2, 7, 7, 3) True
  """

  channels: Sequence[int] = (32, 64)
  num_res_blocks: int = 2
  res_hidden: int = 32
  out_dim: int = 64
  batch_slices: int | str = "auto"  # dgmjax.nn.batch_slices: concurrent slices on CPU

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    # Built once, in the order that gives flax's usual names, then applied to
    # each slice of the batch (shared parameters).
    down = [nn.Conv(ch, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                    kernel_init=_KERNEL_INIT)
            for ch in self.channels]
    mid = nn.Conv(self.channels[-1], (3, 3), kernel_init=_KERNEL_INIT)
    blocks = [ResBlock(self.res_hidden) for _ in range(self.num_res_blocks)]
    head = nn.Conv(self.out_dim, (1, 1), kernel_init=_KERNEL_INIT)

    def net(x):
      for conv in down:
        x = nn.relu(conv(x))
      x = mid(x)
      for block in blocks:
        x = block(x)
      return head(nn.relu(x))

    return apply_in_slices(net, x, self.batch_slices)


class ConvDecoder(nn.Module):
  """(B, h, w, D) -> (B, 4h, 4w, out_channels) (logits or means)."""

  channels: Sequence[int] = (64, 32)
  num_res_blocks: int = 2
  res_hidden: int = 32
  out_channels: int = 1
  impl: str = "auto"  # transposed convolutions: dgmjax.nn.conv_transpose.choose_impl
  batch_slices: int | str = "auto"  # dgmjax.nn.batch_slices: concurrent slices on CPU

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    first = nn.Conv(self.channels[0], (3, 3), kernel_init=_KERNEL_INIT)
    blocks = [ResBlock(self.res_hidden) for _ in range(self.num_res_blocks)]
    # dgmjax's ConvTranspose is flax's (same parameters and names, so older
    # checkpoints load), computed per output phase where that is faster on CPU.
    ups = [ConvTranspose(ch, (4, 4), strides=(2, 2), padding="SAME", impl=self.impl,
                         name=f"ConvTranspose_{i}")
           for i, ch in enumerate(tuple(self.channels[1:]) + (self.out_channels,))]

    def net(z):
      x = first(z)
      for block in blocks:
        x = block(x)
      x = nn.relu(x)
      for up in ups[:-1]:
        x = nn.relu(up(x))
      return ups[-1](x)

    return apply_in_slices(net, z, self.batch_slices)
