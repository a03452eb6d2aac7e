"""The VQ-VAE model: conv encoder → quantiser → conv decoder.

Besides the training forward pass it exposes the discrete tokens, which are
the point of a VQ-VAE (a prior over them is trained separately):
``model.apply(variables, x, method="encode")`` gives integer indices and
``model.apply(variables, indices, method="decode_indices")`` images, for
every quantiser.

``quantizer`` picks the bottleneck (see ``docs/quantizers.md``):

=============  =============================================  ================  ==============
quantizer      layer                                          latent channels   vocabulary
=============  =============================================  ================  ==============
``"vq"``       :class:`VectorQuantizer` (default, the paper)  ``code_dim``      ``num_codes``
``"rotation"`` :class:`VectorQuantizer`, rotation trick       ``code_dim``      ``num_codes``
``"fsq"``      :class:`FSQuantizer` over ``levels``           ``len(levels)``   ``Π levels``
``"rvq"``      :class:`ResidualVectorQuantizer`               ``code_dim``      ``num_codes``
``"lfq"``      :class:`LookupFreeQuantizer`                   ``log2 K``        ``num_codes``
``"factorized"`` :class:`FactorizedQuantizer`                 ``code_dim``      ``num_codes``
=============  =============================================  ================  ==============

RVQ tokens have one column per stage, ``(B, h, w, num_stages)``, each in
``[0, num_codes)``. LFQ needs ``num_codes`` to be a power of two (it has
``log2(num_codes)`` bits). The default (``quantizer="vq"``) builds exactly
the model of earlier versions: same parameter tree, same outputs.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax

from dgmjax.nn.conv import ConvDecoder, ConvEncoder
from dgmjax.nn.quantizers import (
    FactorizedQuantizer,
    FSQuantizer,
    LookupFreeQuantizer,
    ResidualVectorQuantizer,
)
from dgmjax.nn.vq import VectorQuantizer, VQOutput

QUANTIZERS = ("vq", "rotation", "fsq", "rvq", "lfq", "factorized")


class VQVAE(nn.Module):
  """Images (B, H, W, C) with H, W multiples of 4 -> latent grid (B, H/4, W/4).

  Attributes (beyond the conv stack): ``quantizer`` (one of ``QUANTIZERS``);
  for VQ-based ones ``num_codes``, ``code_dim``, ``beta``, ``use_ema``,
  ``decay``, ``dead_code_threshold``, ``cosine`` (``"vq"``/``"rotation"``
  only); ``levels`` (FSQ); ``num_stages`` and ``quantizer_dropout`` (RVQ);
  ``lookup_dim`` (factorized); ``entropy_weight``, ``entropy_gamma``,
  ``entropy_temperature`` (LFQ, with ``beta`` as its commitment weight).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from dgmjax.nn.vqvae import VQVAE
    >>> model = VQVAE(num_codes=16, code_dim=4, channels=(8, 8), num_res_blocks=1,
    ...               res_hidden=8)
    >>> x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
    >>> variables = model.init(jax.random.key(1), x)
    >>> tokens = model.apply(variables, x, method="encode")  # (2, 7, 7) code indices
    >>> images = model.apply(variables, tokens, method="decode_indices")
    >>> print(tokens.shape, bool(jnp.allclose(images, model.apply(variables, x)[0], atol=1e-6)))
    (2, 7, 7) True
  """

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
  quantizer: str = "vq"
  levels: Sequence[int] = (8, 5, 5, 5)
  num_stages: int = 4
  quantizer_dropout: float = 0.0
  lookup_dim: int = 8
  entropy_weight: float = 0.1
  entropy_gamma: float = 1.0
  entropy_temperature: float = 1.0

  @property
  def latent_dim(self) -> int:
    """Channels of the encoder output (the quantiser's input)."""
    if self.quantizer == "fsq":
      return len(self.levels)
    if self.quantizer == "lfq":
      return int(math.log2(self.num_codes))
    return self.code_dim

  @property
  def vocab_size(self) -> int:
    """Number of distinct values of one token (one index column for RVQ)."""
    if self.quantizer == "fsq":
      return math.prod(self.levels)
    return self.num_codes

  def _make_quantizer(self) -> nn.Module:
    # Every quantiser is the submodule "quantizer" (the field of that name is
    # the choice), so the default keeps the parameter tree {"encoder",
    # "quantizer", "decoder"} of earlier checkpoints.
    name = self.quantizer
    scope = dict(name="quantizer")
    if name not in QUANTIZERS:
      raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {name!r}.")
    common = dict(beta=self.beta, use_ema=self.use_ema, decay=self.decay,
                  dead_code_threshold=self.dead_code_threshold, axis_name=self.axis_name)
    if name in ("vq", "rotation"):
      return VectorQuantizer(self.num_codes, self.code_dim, cosine=self.cosine,
                             gradient="rotation" if name == "rotation" else "ste", **common,
                             **scope)
    if name == "fsq":
      return FSQuantizer(tuple(self.levels), axis_name=self.axis_name, **scope)
    if name == "rvq":
      return ResidualVectorQuantizer(self.num_codes, self.code_dim, num_stages=self.num_stages,
                                     dropout_rate=self.quantizer_dropout, **common, **scope)
    if name == "lfq":
      bits = self.latent_dim
      if self.num_codes < 2 or 2**bits != self.num_codes:
        raise ValueError(
            f"num_codes must be a power of two for quantizer='lfq' (log2 of it is the "
            f"number of bits), got {self.num_codes}.")
      return LookupFreeQuantizer(
          bits, beta=self.beta, entropy_weight=self.entropy_weight, gamma=self.entropy_gamma,
          temperature=self.entropy_temperature, axis_name=self.axis_name, **scope)
    return FactorizedQuantizer(self.num_codes, self.code_dim, lookup_dim=self.lookup_dim,
                               **common, **scope)

  def setup(self):
    self.encoder = ConvEncoder(tuple(self.channels), self.num_res_blocks, self.res_hidden,
                               self.latent_dim)
    self.quantizer_module = self._make_quantizer()
    self.decoder = ConvDecoder(tuple(reversed(self.channels)), self.num_res_blocks,
                               self.res_hidden, self.out_channels)

  def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, VQOutput, jax.Array]:
    """Returns (reconstruction, quantiser output, z_e)."""
    z_e = self.encoder(x)
    out = self.quantizer_module(z_e, train=train)
    return self.decoder(out.z), out, z_e

  def encode(self, x: jax.Array) -> jax.Array:
    """Images -> int32 indices (B, h, w), or (B, h, w, num_stages) for RVQ."""
    return self.quantizer_module(self.encoder(x)).indices

  def decode_indices(self, indices: jax.Array) -> jax.Array:
    """Indices from :meth:`encode` -> decoder output (B, H, W, C)."""
    return self.decoder(self.quantizer_module.lookup(indices))
