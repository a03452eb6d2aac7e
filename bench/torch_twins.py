"""PyTorch twins of the trainers' default models, for ``bench/peers.py``.

A twin is the model a PyTorch user would write for the same job: the same
layers in the same order, the same padding, activations and parameter
count, the same loss, optimizer, hyperparameters and batch, fed the same
offline digits. What it does not copy is the initial values (PyTorch's
default initialisers are kept, except where a value shapes the step, such
as a zero-initialised flow layer or the EMA codebook's starting counts): a
speed comparison does not depend on them, and ``peers.py --check`` copies
the flax values in before it compares outputs.

Built from the trainer's own config (``get_config()`` plus the bench's
overrides), so a change of a default reaches both sides:

==============  =========================================================
``vqvae``       ``train.vqvae``: conv encoder (``dgmjax.nn.conv``), EMA
                codebook with dead-code restart (``dgmjax.nn.vq``), conv
                decoder; MSE + β·commitment; Adam.
``dvae``        ``train.dvae`` (``model=categorical``): Jang et al.'s MLP,
                relaxed Gumbel-softmax codes, Bernoulli pixels, KL to the
                uniform prior; τ by Jang's schedule; Adam.
``dvae_conv``   ``train.dvae --config.model=dvae``: conv encoder to a 7×7
                grid of logits over the codes, codebook mix, conv decoder.
``vae``         ``train.vae``: MLP Gaussian VAE with a RealNVP prior
                (one-sample KL); Adam.
``gan_digits``  ``train.gan --config.dataset=digits``: DCGAN-style G
                (dense, channel LayerNorm, transposed convs, tanh) and D
                (strided convs, LeakyReLU); BCE + R1 for D, the G loss
                (non-saturating) against the updated D, and the other
                loss's gradient norm when ``both_grad_norms``; Adam with a
                cosine decay.
==============  =========================================================

Layouts: the flax models are NHWC, the twins NCHW (PyTorch's own layout).
Where a dense layer meets a feature grid the flattening order differs (HWC
against CHW); the weights are the same up to that permutation, which
:func:`load_flax` applies. A flax ``ConvTranspose(4, stride 2, "SAME")``
(``transpose_kernel=False``) is PyTorch's ``ConvTranspose2d(4, stride=2,
padding=1)`` with the kernel flipped in space.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TWINS = ("vqvae", "dvae", "dvae_conv", "vae", "gan_digits")


def _need(cond: bool, key: str, what: str, twin: str) -> None:
  if not cond:
    raise ValueError(f"config.{key} must be {what} for the PyTorch twin '{twin}'.")


# ----------------------------------------------------------------------------
# Layers (twins of dgmjax.nn.conv)
# ----------------------------------------------------------------------------
class ResBlock(nn.Module):
  """x + Conv1x1(relu(Conv3x3(relu(x)))), as ``dgmjax.nn.conv.ResBlock``."""

  def __init__(self, channels: int, hidden: int):
    super().__init__()
    self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
    self.conv2 = nn.Conv2d(hidden, channels, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class ConvEncoder(nn.Module):
  """(B, C, H, W) -> (B, out_dim, H/4, W/4), as ``dgmjax.nn.conv.ConvEncoder``."""

  def __init__(self, in_channels: int, channels, num_res_blocks: int, res_hidden: int,
               out_dim: int):
    super().__init__()
    downs, c = [], in_channels
    for ch in channels:
      downs.append(nn.Conv2d(c, ch, 4, stride=2, padding=1))
      c = ch
    self.downs = nn.ModuleList(downs)
    self.conv = nn.Conv2d(c, c, 3, padding=1)
    self.res = nn.ModuleList(ResBlock(c, res_hidden) for _ in range(num_res_blocks))
    self.out = nn.Conv2d(c, out_dim, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for down in self.downs:
      x = F.relu(down(x))
    x = self.conv(x)
    for block in self.res:
      x = block(x)
    return self.out(F.relu(x))


class ConvDecoder(nn.Module):
  """(B, D, h, w) -> (B, out_channels, 4h, 4w), as ``dgmjax.nn.conv.ConvDecoder``."""

  def __init__(self, in_dim: int, channels, num_res_blocks: int, res_hidden: int,
               out_channels: int):
    super().__init__()
    c = channels[0]
    self.conv = nn.Conv2d(in_dim, c, 3, padding=1)
    self.res = nn.ModuleList(ResBlock(c, res_hidden) for _ in range(num_res_blocks))
    ups = []
    for ch in channels[1:]:
      ups.append(nn.ConvTranspose2d(c, ch, 4, stride=2, padding=1))
      c = ch
    self.ups = nn.ModuleList(ups)
    self.final = nn.ConvTranspose2d(c, out_channels, 4, stride=2, padding=1)

  def forward(self, z: torch.Tensor) -> torch.Tensor:
    x = self.conv(z)
    for block in self.res:
      x = block(x)
    x = F.relu(x)
    for up in self.ups:
      x = F.relu(up(x))
    return self.final(x)


def _nchw(images: np.ndarray) -> torch.Tensor:
  """A NumPy NHWC batch as a contiguous float32 NCHW tensor."""
  return torch.from_numpy(np.ascontiguousarray(images, np.float32)).permute(0, 3, 1, 2).contiguous()


def _bernoulli_ll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
  """log p(x|logits) per example, summed over everything but the batch axis."""
  return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def _perplexity(counts: torch.Tensor) -> torch.Tensor:
  p = counts / counts.sum().clamp_min(1.0)
  return torch.exp(-torch.sum(torch.where(p > 0, p * torch.log(p.clamp_min(1e-30)), 0.0)))


# ----------------------------------------------------------------------------
# A twin: modules, optimizers, one train step
# ----------------------------------------------------------------------------
class Twin:
  """One model's PyTorch train step, driven by ``bench/peers.py``.

  Attributes:
    name: one of :data:`TWINS`.
    modules: the ``nn.Module`` s whose parameters are trained, by player.
    batch_size: examples per step (the trainer's ``config.batch_size``).
  """

  name: str = ""

  def __init__(self, config, image_shape: tuple[int, int, int]):
    self.config = config
    self.image_shape = tuple(int(s) for s in image_shape)
    self.batch_size = int(config.batch_size)
    self.modules: dict[str, nn.Module] = {}
    self.steps_done = 0

  def num_params(self) -> dict[str, int]:
    """Trainable parameters per player (buffers such as EMA statistics excluded)."""
    return {k: sum(p.numel() for p in m.parameters()) for k, m in self.modules.items()}

  def step(self, batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """One training step on a host batch (NHWC images as the trainer's loader gives)."""
    raise NotImplementedError

  def compile(self) -> None:
    """Wrap the forward/loss function in ``torch.compile`` (raises if unsupported)."""
    raise NotImplementedError(f"no torch.compile variant for '{self.name}'")

  def double(self) -> "Twin":
    """Everything in float64 (for ``peers.py --check``'s gradient comparison)."""
    for module in self.modules.values():
      module.double()
    return self


class VQVAETwin(Twin):
  """``train.vqvae``'s default VQ-VAE: encoder, EMA codebook + restart, decoder, Adam."""

  name = "vqvae"

  def __init__(self, config, image_shape):
    super().__init__(config, image_shape)
    _need(config.quantizer == "vq", "quantizer", "'vq'", self.name)
    _need(config.codebook == "ema", "codebook", "'ema'", self.name)
    _need(not config.cosine, "cosine", "False", self.name)
    _need(not config.kmeans_init, "kmeans_init", "False", self.name)
    c_in = self.image_shape[-1]
    k, d = int(config.num_codes), int(config.code_dim)
    channels = tuple(config.channels)
    self.encoder = ConvEncoder(c_in, channels, config.num_res_blocks, config.res_hidden, d)
    self.decoder = ConvDecoder(d, tuple(reversed(channels)), config.num_res_blocks,
                               config.res_hidden, c_in)
    self.model = nn.ModuleDict({"encoder": self.encoder, "decoder": self.decoder})
    self.modules = {"model": self.model}
    # The codebook is EMA state, not a parameter (flax: the "vq_ema" collection):
    # variance_scaling(1, fan_in, uniform) over (K, D) and counts starting at 1.
    limit = math.sqrt(3.0 / k)
    self.codebook = torch.empty(k, d).uniform_(-limit, limit)
    self.cluster_size = torch.ones(k)
    self.embed_sum = self.codebook.clone()
    self.k, self.d = k, d
    self.beta, self.decay = float(config.beta), float(config.ema_decay)
    self.threshold, self.eps = float(config.dead_code_threshold), 1e-5
    self.opt = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
    self._forward_loss: Callable = self.forward_loss

  def quantize(self, z_e: torch.Tensor):
    """(B, D, h, w) -> (straight-through z (B, D, h, w), flat z_e (N, D), indices (N,), z_q)."""
    b, d, h, w = z_e.shape
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
    # |e|² − 2 z·e: the |z|² term does not change the argmin.
    scores = torch.sum(self.codebook ** 2, dim=1) - 2.0 * flat @ self.codebook.t()
    idx = torch.argmin(scores, dim=1)
    z_q = self.codebook[idx]
    z_st = flat + (z_q - flat).detach()
    return z_st.reshape(b, h, w, d).permute(0, 3, 1, 2), flat, idx, z_q

  def forward_loss(self, x: torch.Tensor):
    """(loss, mse, flat z_e, indices, reconstruction) for NCHW images."""
    z_e = self.encoder(x)
    z_st, flat, idx, z_q = self.quantize(z_e)
    x_rec = self.decoder(z_st)
    rec = torch.mean((x_rec - x) ** 2)
    commit = self.beta * torch.mean((flat - z_q.detach()) ** 2, dim=1)
    return rec + commit.mean(), rec, flat, idx, x_rec

  @torch.no_grad()
  def ema_update(self, flat: torch.Tensor, idx: torch.Tensor, *, restart: bool = True):
    """``vq.ema_update`` then ``vq.restart_dead_codes_ema``; returns (counts, restarted)."""
    flat = flat.detach()
    counts = torch.bincount(idx, minlength=self.k).to(flat.dtype)
    sums = flat.new_zeros(self.k, self.d).index_add_(0, idx, flat)
    g = self.decay
    self.cluster_size = g * self.cluster_size + (1.0 - g) * counts
    self.embed_sum = g * self.embed_sum + (1.0 - g) * sums
    total = self.cluster_size.sum()
    smoothed = (self.cluster_size + self.eps) / (total + self.k * self.eps) * total
    self.codebook = self.embed_sum / smoothed[:, None]
    restarted = torch.zeros((), dtype=torch.int64)
    if restart and self.threshold > 0:
      dead = self.cluster_size < self.threshold
      candidates = flat[torch.randint(0, flat.shape[0], (self.k,))]
      self.codebook = torch.where(dead[:, None], candidates, self.codebook)
      self.cluster_size = torch.where(dead, torch.full_like(self.cluster_size, self.threshold),
                                      self.cluster_size)
      self.embed_sum = torch.where(dead[:, None], self.codebook * self.threshold, self.embed_sum)
      restarted = dead.sum()
    return counts, restarted

  def step(self, batch):
    x = _nchw(batch["image"])
    self.opt.zero_grad(set_to_none=True)
    loss, rec, flat, idx, _ = self._forward_loss(x)
    loss.backward()
    self.opt.step()
    counts, restarted = self.ema_update(flat, idx)
    self.steps_done += 1
    return {"loss": loss.detach(), "mse": rec.detach(), "perplexity": _perplexity(counts),
            "codes_used": (counts > 0).float().mean(), "restarted": restarted.float()}

  def double(self) -> "VQVAETwin":
    super().double()
    self.codebook, self.cluster_size, self.embed_sum = (
        t.double() for t in (self.codebook, self.cluster_size, self.embed_sum))
    return self

  def compile(self) -> None:
    # The forward and its backward (AOTAutograd) are compiled; the optimizer and the
    # EMA update stay eager, as in most compiled training loops.
    self._forward_loss = torch.compile(self.forward_loss)


def jang_temperature(step: int, *, rate: float, every: int, min_temperature: float,
                     init_temperature: float) -> float:
  """τ(t) = max(τ_min, τ_0·exp(−r·N·⌊t/N⌋)), ``dgmjax.losses.schedules.jang_temperature_schedule``."""
  return max(min_temperature, init_temperature * math.exp(-rate * (step // every) * every))


class _DiscreteVAETwin(Twin):
  """Shared step of the two ``train.dvae`` models: relaxed codes, Bernoulli pixels."""

  class_dim = -1  # the class axis of the logits

  def _check(self, config) -> None:
    _need(config.estimator == "gumbel_softmax", "estimator", "'gumbel_softmax'", self.name)
    _need(config.likelihood == "bernoulli", "likelihood", "'bernoulli'", self.name)
    _need(config.prior == "uniform", "prior", "'uniform'", self.name)
    _need(config.temperature == "jang", "temperature", "'jang'", self.name)
    _need(config.kl_warmup_steps == 0, "kl_warmup_steps", "0", self.name)
    _need(config.pixel_format in ("binary_dynamic", "binary_static"), "pixel_format",
          "binary", self.name)

  def temperature(self, step: int) -> float:
    c = self.config
    return jang_temperature(step, rate=float(c.anneal_rate), every=int(c.anneal_every),
                            min_temperature=float(c.temperature_final),
                            init_temperature=float(c.temperature_init))

  def sample(self, logits: torch.Tensor, tau: float, noise: torch.Tensor | None = None):
    """The relaxed code softmax((logits + g)/τ); ``noise`` = g (else fresh Gumbel noise)."""
    if noise is None:
      return F.gumbel_softmax(logits, tau=tau, hard=False, dim=self.class_dim)
    return torch.softmax((logits + noise) / tau, dim=self.class_dim)

  def kl(self, logits: torch.Tensor) -> torch.Tensor:
    """KL(q(c|x) || uniform) per example: Σ_vars (log K − H(q))."""
    log_q = torch.log_softmax(logits, dim=self.class_dim)
    k = logits.shape[self.class_dim]
    per_var = torch.sum(log_q.exp() * log_q, dim=self.class_dim) + math.log(k)
    return per_var.flatten(1).sum(1)

  def terms(self, x: torch.Tensor, tau: float, noise: torch.Tensor | None = None):
    """(log-likelihood, KL, logits) per example for images in the twin's layout."""
    logits = self.logits(x)
    codes = self.sample(logits, tau, noise)
    return _bernoulli_ll(self.decode(codes), x), self.kl(logits), logits

  def images(self, batch) -> torch.Tensor:
    raise NotImplementedError

  def step(self, batch):
    x = self.images(batch)
    tau, beta = self.temperature(self.steps_done), float(self.config.kl_weight)
    self.opt.zero_grad(set_to_none=True)
    ll, kl, logits = self.terms(x, tau)
    loss = -torch.mean(ll - beta * kl)
    loss.backward()
    self.opt.step()
    self.steps_done += 1
    with torch.no_grad():
      q_max = torch.softmax(logits, dim=self.class_dim).amax(dim=self.class_dim).mean()
      return {"loss": loss.detach(), "neg_elbo": torch.mean(kl - ll).detach(),
              "recon": -ll.mean().detach(), "kl": kl.mean().detach(), "q_max": q_max,
              "temperature": torch.tensor(tau), "kl_weight": torch.tensor(beta)}


def _mlp(sizes, *, last_activation: bool = False) -> nn.Sequential:
  layers = []
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
    layers.append(nn.Linear(a, b))
    if i < len(sizes) - 2 or last_activation:
      layers.append(nn.ReLU())
  return nn.Sequential(*layers)


class CategoricalVAETwin(_DiscreteVAETwin):
  """``train.dvae`` default: MLP 784-512-256-(N×K), (N×K)-256-512-784 (Jang et al.)."""

  name = "dvae"

  def __init__(self, config, image_shape):
    super().__init__(config, image_shape)
    self._check(config)
    _need(config.model == "categorical", "model", "'categorical'", self.name)
    pixels = math.prod(self.image_shape)
    self.n, self.k = int(config.num_vars), int(config.num_classes)
    hidden = tuple(config.hidden)
    self.encoder = _mlp((pixels, *hidden, self.n * self.k))
    self.decoder = _mlp((self.n * self.k, *reversed(hidden), pixels))
    self.model = nn.ModuleDict({"encoder": self.encoder, "decoder": self.decoder})
    self.modules = {"model": self.model}
    self.opt = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)

  def images(self, batch):
    # The MLPs flatten NHWC images (HWC order), as the flax MLPs do.
    x = np.ascontiguousarray(batch["image"], np.float32)
    return torch.from_numpy(x.reshape(x.shape[0], -1))

  def logits(self, x):
    return self.encoder(x).view(x.shape[0], self.n, self.k)

  def decode(self, codes):
    return self.decoder(codes.flatten(1))


class ConvDVAETwin(_DiscreteVAETwin):
  """``train.dvae --config.model=dvae``: conv logits over K codes, codebook mix, conv decoder."""

  name = "dvae_conv"
  class_dim = 1  # NCHW: the codes are the channels

  def __init__(self, config, image_shape):
    super().__init__(config, image_shape)
    self._check(config)
    _need(config.model == "dvae", "model", "'dvae'", self.name)
    c_in = self.image_shape[-1]
    k, d = int(config.num_codes), int(config.code_dim)
    channels = tuple(config.channels)
    self.encoder = ConvEncoder(c_in, channels, config.num_res_blocks, config.res_hidden, k)
    self.embedding = nn.Parameter(torch.randn(k, d))  # dgmjax.nn.dvae.Codebook: N(0, 1)
    self.decoder = ConvDecoder(d, tuple(reversed(channels)), config.num_res_blocks,
                               config.res_hidden, c_in)
    self.model = nn.ModuleDict({"encoder": self.encoder, "decoder": self.decoder})
    self.model.register_parameter("embedding", self.embedding)
    self.modules = {"model": self.model}
    self.opt = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)

  def images(self, batch):
    return _nchw(batch["image"])

  def logits(self, x):
    return self.encoder(x)

  def decode(self, codes):
    # z = Σ_k ĉ_k e_k at every grid position.
    return self.decoder(torch.einsum("bkhw,kd->bdhw", codes, self.embedding))


_LOG_2PI = math.log(2.0 * math.pi)


class AffineCoupling(nn.Module):
  """One RealNVP coupling, as ``dgmjax.nn.flows.AffineCoupling`` (tanh-bounded scale, GELU)."""

  def __init__(self, mask, hidden):
    super().__init__()
    d = len(mask)
    self.register_buffer("keep", torch.tensor(mask, dtype=torch.bool))
    sizes = (d, *hidden)
    self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:],
                                                                strict=True))
    self.out = nn.Linear(sizes[-1], 2 * d)
    nn.init.zeros_(self.out.weight)  # flax: kernel_init=zeros, so a fresh flow is the identity
    nn.init.zeros_(self.out.bias)
    self.scale = nn.Parameter(torch.ones(d))

  def forward(self, z: torch.Tensor):
    h = torch.where(self.keep, z, torch.zeros_like(z))
    for layer in self.layers:
      h = F.gelu(layer(h), approximate="tanh")  # flax nn.gelu is the tanh form
    raw = self.out(h)
    d = z.shape[-1]
    log_scale = self.scale * torch.tanh(raw[..., :d])
    moved = ~self.keep
    shift = torch.where(moved, raw[..., d:], torch.zeros_like(z))
    log_scale = torch.where(moved, log_scale, torch.zeros_like(z))
    y = torch.where(self.keep, z, z * torch.exp(log_scale) + shift)
    return y, log_scale.sum(-1)


class VAETwin(Twin):
  """``train.vae`` default: MLP Gaussian VAE, latent 32, RealNVP prior, Bernoulli pixels."""

  name = "vae"

  def __init__(self, config, image_shape, masks=None):
    super().__init__(config, image_shape)
    _need(config.arch == "mlp", "arch", "'mlp'", self.name)
    _need(config.likelihood == "bernoulli", "likelihood", "'bernoulli'", self.name)
    _need(config.prior in ("flow", "gaussian"), "prior", "'flow' or 'gaussian'", self.name)
    _need(config.kl_warmup_steps == 0, "kl_warmup_steps", "0", self.name)
    pixels = math.prod(self.image_shape)
    hidden, d = tuple(config.hidden), int(config.latent_dim)
    self.d = d
    self.trunk = _mlp((pixels, *hidden), last_activation=True)
    self.mean = nn.Linear(hidden[-1], d)
    self.log_var = nn.Linear(hidden[-1], d)
    self.decoder = _mlp((d, *reversed(hidden), pixels))
    parts = {"trunk": self.trunk, "mean": self.mean, "log_var": self.log_var,
             "decoder": self.decoder}
    self.flow = None
    if config.prior == "flow":
      if masks is None:
        # The masks the flax flow uses (a NumPy computation).
        from dgmjax.nn.flows import coupling_masks

        masks = coupling_masks(d, int(config.flow_layers))
      self.flow = nn.ModuleList(AffineCoupling(m, tuple(config.flow_hidden)) for m in masks)
      parts["flow"] = self.flow
    self.model = nn.ModuleDict(parts)
    self.modules = {"model": self.model}
    self.opt = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)

  def encode(self, x):
    h = self.trunk(x)
    return self.mean(h), self.log_var(h)

  def log_prior(self, z):
    if self.flow is None:
      return -0.5 * torch.sum(z ** 2 + _LOG_2PI, dim=-1)
    log_det = z.new_zeros(z.shape[:-1])
    for layer in self.flow:
      z, ld = layer(z)
      log_det = log_det + ld
    return -0.5 * torch.sum(z ** 2 + _LOG_2PI, dim=-1) + log_det

  def terms(self, x, eps):
    mean, log_var = self.encode(x)
    z = mean + torch.exp(0.5 * log_var) * eps
    ll = _bernoulli_ll(self.decoder(z), x)
    if self.flow is None:
      kl = 0.5 * torch.sum(mean ** 2 + log_var.exp() - 1.0 - log_var, dim=-1)
    else:  # one-sample estimate log q(z|x) − log p(z|λ)
      log_q = -0.5 * torch.sum(_LOG_2PI + log_var + (z - mean) ** 2 / log_var.exp(), dim=-1)
      kl = log_q - self.log_prior(z)
    return ll, kl

  def step(self, batch):
    x = np.ascontiguousarray(batch["image"], np.float32)
    x = torch.from_numpy(x.reshape(x.shape[0], -1))
    eps = torch.randn(x.shape[0], self.d)
    self.opt.zero_grad(set_to_none=True)
    ll, kl = self.terms(x, eps)
    loss = -torch.mean(ll - kl)
    loss.backward()
    self.opt.step()
    self.steps_done += 1
    rec, kl = ll.mean().detach(), kl.mean().detach()
    return {"loss": loss.detach(), "elbo": rec - kl, "rec": rec, "kl": kl,
            "beta": torch.ones(())}


class ChannelLayerNorm(nn.Module):
  """LayerNorm over the channels of an NCHW map (flax ``nn.LayerNorm`` on NHWC), ε = 1e-6."""

  def __init__(self, channels: int, eps: float = 1e-6):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(channels))
    self.bias = nn.Parameter(torch.zeros(channels))
    self.eps = eps

  def forward(self, x):
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    x = (x - mean) * torch.rsqrt(var + self.eps)
    return x * self.weight[:, None, None] + self.bias[:, None, None]


class DCGANGenerator(nn.Module):
  """As ``dgmjax.nn.gan.DCGANGenerator``: dense → (2b, H/4, W/4), LN+ReLU, 2 transposed convs, tanh."""

  def __init__(self, latent_dim: int, image_shape, base: int):
    super().__init__()
    h, w, c = image_shape
    self.grid = (2 * base, h // 4, w // 4)
    self.dense = nn.Linear(latent_dim, math.prod(self.grid))
    self.norm1 = ChannelLayerNorm(2 * base)
    self.up1 = nn.ConvTranspose2d(2 * base, base, 4, stride=2, padding=1)
    self.norm2 = ChannelLayerNorm(base)
    self.up2 = nn.ConvTranspose2d(base, c, 4, stride=2, padding=1)

  def forward(self, z):
    x = self.dense(z).view(z.shape[0], *self.grid)
    x = self.up1(F.relu(self.norm1(x)))
    return torch.tanh(self.up2(F.relu(self.norm2(x))))


class DCGANDiscriminator(nn.Module):
  """As ``dgmjax.nn.gan.DCGANDiscriminator``: two 4×4 stride-2 convs, LeakyReLU(0.2), dense."""

  def __init__(self, image_shape, base: int):
    super().__init__()
    h, w, c = image_shape
    self.conv1 = nn.Conv2d(c, base, 4, stride=2, padding=1)
    self.conv2 = nn.Conv2d(base, 2 * base, 4, stride=2, padding=1)
    self.dense = nn.Linear(2 * base * (h // 4) * (w // 4), 1)

  def forward(self, x):
    x = F.leaky_relu(self.conv1(x), 0.2)
    x = F.leaky_relu(self.conv2(x), 0.2)
    return self.dense(x.flatten(1))[:, 0]


#: The generator's losses from D's logits on fakes (``dgmjax.losses.gan``):
#: non-saturating −log D(G(z)) = softplus(−l), minimax log(1 − D(G(z))) = −softplus(l).
GENERATOR_LOSSES = {"non_saturating": lambda logits: F.softplus(-logits),
                    "minimax": lambda logits: -F.softplus(logits)}


def cosine_lr_factor(step: int, *, decay_steps: int, alpha: float) -> float:
  """``optax.cosine_decay_schedule`` as a factor of the peak rate."""
  t = min(step, decay_steps) / decay_steps
  return (1.0 - alpha) * 0.5 * (1.0 + math.cos(math.pi * t)) + alpha


class GANTwin(Twin):
  """``train.gan --config.dataset=digits``: D step (BCE + R1), then G step against the new D."""

  name = "gan_digits"

  def __init__(self, config, image_shape):
    super().__init__(config, image_shape)
    _need(config.dataset not in ("ring", "grid"), "dataset", "an image dataset", self.name)
    _need(config.n_critic == 1, "n_critic", "1", self.name)
    _need(not config.simultaneous, "simultaneous", "False", self.name)
    _need(config.pack == 1, "pack", "1", self.name)
    _need(config.generator_loss in GENERATOR_LOSSES, "generator_loss",
          f"one of {tuple(GENERATOR_LOSSES)}", self.name)
    self.g_loss_name = config.generator_loss
    # train.gan's both_grad_norms: the other loss's gradient at the same (G, D, z)
    # every step, measured and never applied (one more backward).
    self.other_loss = (next(k for k in GENERATOR_LOSSES if k != self.g_loss_name)
                       if config.get("both_grad_norms", False) else None)
    self.latent = int(config.latent_dim) or 64
    base = int(config.base_channels)
    self.G = DCGANGenerator(self.latent, self.image_shape, base)
    self.D = DCGANDiscriminator(self.image_shape, base)
    self.modules = {"G": self.G, "D": self.D}
    b1, b2 = float(config.adam_b1), float(config.adam_b2)
    lr_g = float(config.learning_rate)
    lr_d = float(config.d_learning_rate or config.learning_rate)
    self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr_g, betas=(b1, b2))
    self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=(b1, b2))
    steps = int(config.num_steps)
    if config.lr_schedule == "cosine":
      alpha = float(config.final_lr_fraction)
      factor = lambda t: cosine_lr_factor(t, decay_steps=steps, alpha=alpha)  # noqa: E731
    else:
      factor = lambda t: 1.0  # noqa: E731
    self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, factor)
    self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, factor)
    self.gamma, self.real_label = float(config.r1_weight), float(config.real_label)

  def d_loss(self, x_real: torch.Tensor, z: torch.Tensor):
    """(BCE + R1 penalty, BCE, penalty, real logits, fake logits)."""
    if self.gamma:
      x_real = x_real.detach().requires_grad_(True)
      l_real = self.D(x_real)
      (grad_x,) = torch.autograd.grad(l_real.sum(), x_real, create_graph=True)
      penalty = torch.mean(0.5 * self.gamma * grad_x.square().flatten(1).sum(1))
    else:
      l_real, penalty = self.D(x_real), x_real.new_zeros(())
    with torch.no_grad():  # D's loss does not train G: no graph through it
      fake = self.G(z)
    l_fake = self.D(fake)
    bce = (F.binary_cross_entropy_with_logits(l_real, torch.full_like(l_real, self.real_label))
           + F.binary_cross_entropy_with_logits(l_fake, torch.zeros_like(l_fake)))
    return bce + penalty, bce, penalty, l_real, l_fake

  def g_loss(self, z: torch.Tensor, loss: str | None = None) -> torch.Tensor:
    """The generator loss ``loss`` (default: the trained one) of fakes G(z)."""
    return GENERATOR_LOSSES[loss or self.g_loss_name](self.D(self.G(z))).mean()

  def step(self, batch):
    x_real = _nchw(batch["image"])
    b = x_real.shape[0]
    self.opt_d.zero_grad(set_to_none=True)
    total, bce, penalty, l_real, l_fake = self.d_loss(x_real, torch.randn(b, self.latent))
    total.backward()
    self.opt_d.step()
    self.sched_d.step()
    self.opt_g.zero_grad(set_to_none=True)
    params = list(self.G.parameters())
    logits = self.D(self.G(torch.randn(b, self.latent)))
    g_loss = GENERATOR_LOSSES[self.g_loss_name](logits).mean()
    metrics = {}
    if self.other_loss is not None:
      other = torch.autograd.grad(GENERATOR_LOSSES[self.other_loss](logits).mean(), params,
                                  retain_graph=True)
      metrics[f"g_grad_norm_{self.other_loss}"] = _global_norm(other)
    # Gradients for G only: D's weight gradients are not needed for this update.
    g_loss.backward(inputs=params)
    self.opt_g.step()
    self.sched_g.step()
    self.steps_done += 1
    with torch.no_grad():
      metrics.update({
          "d_loss": bce.detach(), "r1_penalty": penalty.detach(),
          "jsd": 0.5 * (math.log(4.0) - bce.detach()),
          "d_real": torch.sigmoid(l_real).mean(), "d_fake": torch.sigmoid(l_fake).mean(),
          "d_accuracy": 0.5 * ((l_real > 0).float().mean() + (l_fake < 0).float().mean()),
          "g_loss": g_loss.detach(), "g_grad_norm": _global_norm([p.grad for p in params])})
    return metrics


def _global_norm(tensors) -> torch.Tensor:
  """‖(t₁, …, tₙ)‖₂ over all entries (``optax.tree.norm``)."""
  return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def make_twin(name: str, config, image_shape) -> Twin:
  """The twin ``name`` (one of :data:`TWINS`) of a trainer config."""
  classes = {"vqvae": VQVAETwin, "dvae": CategoricalVAETwin, "dvae_conv": ConvDVAETwin,
             "vae": VAETwin, "gan_digits": GANTwin}
  if name not in classes:
    raise ValueError(f"name must be one of {TWINS}, got {name!r}.")
  return classes[name](config, image_shape)


def run_steps(twin: Twin, next_batch: Callable[[], dict], n: int) -> tuple[float, dict]:
  """``n`` steps (batches drawn inside the timing, as the trainer's loop does).

  Returns (seconds, the last step's metrics as floats): the metrics are read
  back once at the end, like the harness reading a log window.
  """
  t0 = time.perf_counter()
  metrics = {}
  for _ in range(n):
    metrics = twin.step(next_batch())
  host = {k: float(v) for k, v in metrics.items()}
  return time.perf_counter() - t0, host


# ----------------------------------------------------------------------------
# Copying flax parameters in (for peers.py --check)
# ----------------------------------------------------------------------------
def conv_weight(kernel: np.ndarray) -> np.ndarray:
  """flax Conv kernel (kh, kw, in, out) -> torch Conv2d weight (out, in, kh, kw)."""
  return np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))


def conv_transpose_weight(kernel: np.ndarray) -> np.ndarray:
  """flax ConvTranspose kernel (kh, kw, in, out) -> torch ConvTranspose2d weight (in, out, kh, kw).

  flax (``transpose_kernel=False``) correlates the dilated input with the kernel
  as stored; PyTorch's transposed convolution is the adjoint of a convolution,
  i.e. the same correlation with the kernel flipped in space.
  """
  return np.ascontiguousarray(np.transpose(kernel[::-1, ::-1], (2, 3, 0, 1)))


def dense_weight(kernel: np.ndarray) -> np.ndarray:
  """flax Dense kernel (in, out) -> torch Linear weight (out, in)."""
  return np.ascontiguousarray(kernel.T)


def _hwc_rows_to_chw(kernel: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
  """Reorder the input rows of a dense kernel fed a flattened (h, w, c) grid to (c, h, w)."""
  h, w, c = grid
  return kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)


def _hwc_cols_to_chw(kernel: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
  """Reorder the output columns of a dense layer reshaped to (h, w, c) to (c, h, w)."""
  h, w, c = grid
  return kernel.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(kernel.shape[0], -1)


def _conv(p) -> dict:
  return {"weight": conv_weight(p["kernel"]), "bias": p["bias"]}


def _convt(p) -> dict:
  return {"weight": conv_transpose_weight(p["kernel"]), "bias": p["bias"]}


def _dense(p) -> dict:
  return {"weight": dense_weight(p["kernel"]), "bias": p["bias"]}


def _res(p) -> dict:
  return {"conv1": _conv(p["Conv_0"]), "conv2": _conv(p["Conv_1"])}


def _encoder_sd(p, num_down: int, num_res: int) -> dict:
  """``dgmjax.nn.conv.ConvEncoder`` params -> this module's state-dict tree."""
  return {"downs": {str(i): _conv(p[f"Conv_{i}"]) for i in range(num_down)},
          "conv": _conv(p[f"Conv_{num_down}"]),
          "res": {str(i): _res(p[f"ResBlock_{i}"]) for i in range(num_res)},
          "out": _conv(p[f"Conv_{num_down + 1}"])}


def _decoder_sd(p, num_up: int, num_res: int) -> dict:
  """``dgmjax.nn.conv.ConvDecoder`` params -> this module's state-dict tree."""
  return {"conv": _conv(p["Conv_0"]),
          "res": {str(i): _res(p[f"ResBlock_{i}"]) for i in range(num_res)},
          "ups": {str(i): _convt(p[f"ConvTranspose_{i}"]) for i in range(num_up - 1)},
          "final": _convt(p[f"ConvTranspose_{num_up - 1}"])}


def _mlp_sd(dense_params: list) -> dict:
  """A list of flax Dense params -> an ``nn.Sequential`` of Linear/ReLU state-dict tree."""
  return {str(2 * i): _dense(p) for i, p in enumerate(dense_params)}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = np.asarray(v)  # float64 gradients stay float64
  return out


def flax_to_torch(twin: Twin, flax_params: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
  """flax params (NumPy leaves) -> ``{player: torch state dict}`` for ``twin``.

  Also maps gradients: a gradient tree has the params' structure, and every
  mapping here is a permutation (plus a flip), so it carries gradients alike.
  """
  c = twin.config
  if isinstance(twin, VQVAETwin):
    n_down, n_res = len(c.channels), int(c.num_res_blocks)
    sd = {"encoder": _encoder_sd(flax_params["encoder"], n_down, n_res),
          "decoder": _decoder_sd(flax_params["decoder"], n_down, n_res)}
    return {"model": _flatten(sd)}
  if isinstance(twin, CategoricalVAETwin):
    enc, dec = flax_params["encoder"]["params"], flax_params["decoder"]["params"]
    n = len(c.hidden) + 1
    sd = {"encoder": _mlp_sd([enc[f"Dense_{i}"] for i in range(n)]),
          "decoder": _mlp_sd([dec[f"Dense_{i}"] for i in range(n)])}
    return {"model": _flatten(sd)}
  if isinstance(twin, ConvDVAETwin):
    enc = flax_params["encoder"]["params"]["ConvEncoder_0"]
    dec = flax_params["decoder"]["params"]
    n_down, n_res = len(c.channels), int(c.num_res_blocks)
    sd = {"encoder": _encoder_sd(enc, n_down, n_res),
          "decoder": _decoder_sd(dec["ConvDecoder_0"], n_down, n_res),
          "embedding": dec["Codebook_0"]["embedding"]}
    return {"model": _flatten(sd)}
  if isinstance(twin, VAETwin):
    enc, dec = flax_params["encoder"]["params"], flax_params["decoder"]["params"]
    n = len(c.hidden)
    head = enc["_GaussianHead_0"]
    sd = {"trunk": _mlp_sd([enc[f"Dense_{i}"] for i in range(n)]),
          "mean": _dense(head["mean"]), "log_var": _dense(head["log_var"]),
          "decoder": _mlp_sd([dec[f"Dense_{i}"] for i in range(n + 1)])}
    if twin.flow is not None:
      prior = flax_params["prior"]["params"]
      flow = {}
      for i in range(len(twin.flow)):
        p = prior[f"layers_{i}"]
        flow[str(i)] = {"layers": {str(j): _dense(p[f"layers_{j}"])
                                   for j in range(len(c.flow_hidden))},
                        "out": _dense(p["out"]), "scale": p["scale"]}
      sd["flow"] = flow
    out = _flatten(sd)
    if twin.flow is not None:  # the masks are buffers, not flax parameters
      for i, layer in enumerate(twin.flow):
        out[f"flow.{i}.keep"] = layer.keep.numpy()
    return {"model": out}
  if isinstance(twin, GANTwin):
    g, d = flax_params["gen"]["params"], flax_params["disc"]["params"]
    base = int(c.base_channels)
    h, w, _ = twin.image_shape
    g_grid = (h // 4, w // 4, 2 * base)
    dense = g["Dense_0"]
    gen = {"dense": {"weight": dense_weight(_hwc_cols_to_chw(dense["kernel"], g_grid)),
                     "bias": _hwc_cols_to_chw(dense["bias"][None], g_grid)[0]},
           "norm1": {"weight": g["LayerNorm_0"]["scale"], "bias": g["LayerNorm_0"]["bias"]},
           "up1": _convt(g["ConvTranspose_0"]),
           "norm2": {"weight": g["LayerNorm_1"]["scale"], "bias": g["LayerNorm_1"]["bias"]},
           "up2": _convt(g["ConvTranspose_1"])}
    d_dense = d["Dense_0"]
    disc = {"conv1": _conv(d["Conv_0"]), "conv2": _conv(d["Conv_1"]),
            "dense": {"weight": dense_weight(_hwc_rows_to_chw(d_dense["kernel"],
                                                              (h // 4, w // 4, 2 * base))),
                      "bias": d_dense["bias"]}}
    return {"G": _flatten(gen), "D": _flatten(disc)}
  raise TypeError(f"no flax mapping for {type(twin).__name__}")


def load_flax(twin: Twin, flax_params: Mapping[str, Any]) -> None:
  """Copy flax parameters into the twin's modules (every tensor must be set: strict)."""
  for player, sd in flax_to_torch(twin, flax_params).items():
    twin.modules[player].load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()},
                                         strict=True)
