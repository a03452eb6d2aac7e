"""The VQ-VAE model: conv encoder → vector quantiser → conv decoder.

Besides the training forward pass it exposes the discrete tokens, which are
the point of a VQ-VAE (a prior over them is trained separately):
``model.apply(variables, x, method="encode")`` gives code indices and
``model.apply(variables, indices, method="decode_indices")`` images.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from dgmjax.nn.conv import ConvDecoder, ConvEncoder
from dgmjax.nn.vq import VectorQuantizer, VQOutput


class VQVAE(nn.Module):
  """Images (B, H, W, C) with H, W multiples of 4 -> latent grid (B, H/4, W/4)."""

  num_codes: int = 512
  code_dim: int = 32
  out_channels: int = 1
  channels: Sequence[int] = (32, 64)
  num_res_blocks: int = 2
  res_hidden: int = 32
  beta: float = 0.25
  use_ema: bool = True
  decay: float = 0.99
  dead_code_threshold: float = 0.01
  cosine: bool = False
  axis_name: str | None = None

  def setup(self):
    self.encoder = ConvEncoder(tuple(self.channels), self.num_res_blocks, self.res_hidden,
                               self.code_dim)
    self.quantizer = VectorQuantizer(
        self.num_codes, self.code_dim, beta=self.beta, use_ema=self.use_ema,
        decay=self.decay, dead_code_threshold=self.dead_code_threshold,
        cosine=self.cosine, axis_name=self.axis_name)
    self.decoder = ConvDecoder(tuple(reversed(self.channels)), self.num_res_blocks,
                               self.res_hidden, self.out_channels)

  def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, VQOutput, jax.Array]:
    """Returns (reconstruction, quantiser output, z_e)."""
    z_e = self.encoder(x)
    out = self.quantizer(z_e, train=train)
    return self.decoder(out.z), out, z_e

  def encode(self, x: jax.Array) -> jax.Array:
    """Images -> int32 code indices (B, h, w)."""
    return self.quantizer(self.encoder(x)).indices

  def decode_indices(self, indices: jax.Array) -> jax.Array:
    """Code indices (B, h, w) -> decoder output (B, H, W, C)."""
    return self.decoder(self.quantizer.lookup(indices))
