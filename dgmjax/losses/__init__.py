"""The lecture's estimators as pure JAX functions (no Flax).

One module per idea; import the module and call its functions::

    from dgmjax.losses import vq, gumbel, gan
    z_q, idx = vq.quantize(z_e, codebook)

Modules: ``elbo`` (Gaussian KL, likelihoods, IWAE), ``surgery`` (ELBO surgery:
MI and marginal KL), ``vq`` (vector quantization, EMA codebook, restarts,
the rotation trick, l2-normalised factorized lookup), ``fsq`` (finite scalar
quantization), ``lfq`` (lookup-free quantization and its entropy penalty),
``rvq`` (residual VQ and quantizer dropout),
``gumbel`` (Gumbel-max, Gumbel-softmax, Concrete), ``schedules`` (temperature
and KL-weight schedules), ``gan`` (discriminator/generator losses, JSD),
``density_ratio`` (the density-ratio trick, AVB), ``divergences`` (KL and JSD
on grids and samples), ``tokens`` (token cross-entropy and MaskGIT masking for
priors over discrete latents).
"""

from dgmjax.losses import (
    density_ratio,
    divergences,
    elbo,
    fsq,
    gan,
    gumbel,
    lfq,
    rvq,
    schedules,
    surgery,
    tokens,
    vq,
)

__all__ = [
    "density_ratio",
    "divergences",
    "elbo",
    "fsq",
    "gan",
    "gumbel",
    "lfq",
    "rvq",
    "schedules",
    "surgery",
    "tokens",
    "vq",
]
