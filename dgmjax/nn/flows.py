"""RealNVP affine-coupling flow, usable as a learned VAE prior.

Lecture 7, slide "ELBO with flow-based VAE prior": the prior is the density
of z under an invertible map f(z, λ) onto a standard Gaussian,

  log p(z|λ) = log N(f(z, λ); 0, I) + log |det J_f(z)|,

and sampling runs the map backwards, z* ~ N(0, I), z = f⁻¹(z*, λ). The
prior is trained jointly with the VAE through the ELBO, which (slide "ELBO
revisiting") fits p(z|λ) to the aggregate posterior q_agg by forward KL.

Each coupling layer (Dinh et al. 2017) keeps the masked coordinates z_A and
moves the others by an affine map whose scale and shift depend on z_A only:

  y_A = z_A,   y_B = z_B · exp(s(z_A)) + t(z_A),   log |det J| = Σ s(z_A),

so the inverse z_B = (y_B − t(y_A)) · exp(−s(y_A)) is exact and the
log-determinant costs one sum. Layers alternate which half is kept. The last
layer of every conditioner starts at zero, so a fresh flow is the identity
and a fresh flow prior is exactly N(0, I): a flow-prior VAE starts where the
Gaussian-prior VAE does.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.losses.elbo import log_standard_normal


def coupling_masks(dim: int, num_layers: int) -> list[tuple[bool, ...]]:
  """The pass-through masks of ``num_layers`` coupling layers over ``dim``.

  Layers come in complementary pairs (what one keeps the next moves), and the
  pairs alternate between an odd/even split and a first-half/second-half
  split, so after four layers every coordinate has conditioned every other.

  Args:
    dim: latent size d >= 2.
    num_layers: number of coupling layers >= 1.

  Returns:
    ``num_layers`` tuples of ``dim`` booleans; True = kept (conditioning).

  Example:
    >>> for m in coupling_masks(4, 4):
    ...   print("".join("x" if b else "." for b in m))
    x.x.
    .x.x
    xx..
    ..xx
  """
  if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
    raise ValueError(f"dim must be an int >= 2 for a coupling flow, got {dim!r}.")
  if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
    raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}.")
  idx = np.arange(dim)
  masks = []
  for layer in range(num_layers):
    if (layer // 2) % 2 == 0:
      keep = idx % 2 == 0
    else:
      keep = idx < (dim + 1) // 2
    if layer % 2 == 1:
      keep = ~keep
    masks.append(tuple(bool(b) for b in keep))
  return masks


class AffineCoupling(nn.Module):
  """One RealNVP affine coupling layer ``z -> y`` with its log-determinant.

  Attributes:
    mask: which coordinates pass through unchanged (True) and condition the
      affine map of the others; a static tuple of booleans of length d.
    hidden: widths of the conditioner MLP.
  """

  mask: tuple[bool, ...]
  hidden: Sequence[int] = (64, 64)

  def setup(self):
    d = len(self.mask)
    self.layers = [nn.Dense(h) for h in self.hidden]
    # Zero init: s = t = 0, the layer starts as the identity.
    self.out = nn.Dense(2 * d, kernel_init=nn.initializers.zeros)
    # tanh bounds each layer's log-scale to (−scale, scale); the bound itself
    # is learned. Unbounded scales make early training of a prior unstable.
    self.scale = self.param("scale", nn.initializers.ones, (d,))

  def _shift_and_log_scale(self, kept: jax.Array):
    h = kept
    for layer in self.layers:
      h = nn.gelu(layer(h))
    raw = self.out(h)
    d = len(self.mask)
    log_scale = self.scale * jnp.tanh(raw[..., :d])
    shift = raw[..., d:]
    moved = ~jnp.asarray(self.mask)
    # Only the moved coordinates get a scale and shift.
    return jnp.where(moved, shift, 0.0), jnp.where(moved, log_scale, 0.0)

  def _check(self, name: str, x: jax.Array) -> None:
    if x.ndim < 1 or x.shape[-1] != len(self.mask):
      raise ValueError(
          f"{name} must have last dimension {len(self.mask)} (the flow's dim), "
          f"got shape {x.shape}."
      )

  def __call__(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Forward ``y = f(z)``; returns ``(y, log|det ∂y/∂z|)`` per point."""
    self._check("z", z)
    keep = jnp.asarray(self.mask)
    shift, log_scale = self._shift_and_log_scale(jnp.where(keep, z, 0.0))
    y = jnp.where(keep, z, z * jnp.exp(log_scale) + shift)
    return y, jnp.sum(log_scale, axis=-1)

  def inverse(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Inverse ``z = f⁻¹(y)``; returns ``(z, log|det ∂z/∂y|)`` per point."""
    self._check("y", y)
    keep = jnp.asarray(self.mask)
    # y_A = z_A, so the conditioner sees exactly what it saw going forward.
    shift, log_scale = self._shift_and_log_scale(jnp.where(keep, y, 0.0))
    z = jnp.where(keep, y, (y - shift) * jnp.exp(-log_scale))
    return z, -jnp.sum(log_scale, axis=-1)


class RealNVP(nn.Module):
  """A stack of affine couplings: ``f(z) = z*``, the flow of a flow prior.

  ``__call__`` maps data-side points z to the base space z* and returns
  ``log|det J_f(z)|``; :meth:`inverse` maps back; :meth:`log_prob` is the
  prior log-density ``log N(f(z)) + log|det J_f(z)|``; :meth:`sample` turns
  base noise into prior samples. Any leading batch axes are allowed.

  Attributes:
    dim: latent size d >= 2.
    num_layers: number of coupling layers (4 is enough for a 2-D prior).
    hidden: widths of each conditioner MLP.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> flow = RealNVP(dim=2, num_layers=4)
    >>> z = jnp.array([[0.5, -1.0]])
    >>> params = flow.init(jax.random.key(0), z)
    >>> # A fresh flow is the identity, so the prior is N(0, I).
    >>> z_star, log_det = flow.apply(params, z)
    >>> print(z_star, log_det)
    [[ 0.5 -1. ]] [0.]
    >>> print(jnp.round(flow.apply(params, z, method=RealNVP.log_prob), 4))
    [-2.4629]
  """

  dim: int
  num_layers: int = 4
  hidden: Sequence[int] = (64, 64)

  def setup(self):
    self.layers = [
        AffineCoupling(mask=m, hidden=tuple(self.hidden))
        for m in coupling_masks(self.dim, self.num_layers)
    ]

  def __call__(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """z -> (z* = f(z), log|det J_f(z)|); shapes ``(..., d)`` and ``(...)``."""
    log_det = jnp.zeros(z.shape[:-1], z.dtype)
    for layer in self.layers:
      z, ld = layer(z)
      log_det = log_det + ld
    return z, log_det

  def inverse(self, z_star: jax.Array) -> tuple[jax.Array, jax.Array]:
    """z* -> (z = f⁻¹(z*), log|det J_{f⁻¹}(z*)|) = −log|det J_f(z)|."""
    log_det = jnp.zeros(z_star.shape[:-1], z_star.dtype)
    for layer in reversed(self.layers):
      z_star, ld = layer.inverse(z_star)
      log_det = log_det + ld
    return z_star, log_det

  def log_prob(self, z: jax.Array) -> jax.Array:
    """Flow-prior log-density log N(f(z); 0, I) + log|det J_f(z)|, ``(...)``."""
    z_star, log_det = self(z)
    return log_standard_normal(z_star) + log_det

  def sample(self, z_star: jax.Array) -> jax.Array:
    """Prior samples z = f⁻¹(z*) from base noise z* ~ N(0, I) of shape (..., d)."""
    return self.inverse(z_star)[0]
