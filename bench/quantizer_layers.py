"""Speed of each quantizer layer alone: dgmjax vs vector-quantize-pytorch.

Every method at the shapes of ``python -m train.vqvae``'s default model (a
batch of 128 digit images, a 7 × 7 latent grid: 6272 vectors) and the code
budgets of ``bench/quantizers.py``:

==========  ==========================================  ==================================================
method      dgmjax                                      vector-quantize-pytorch
==========  ==========================================  ==================================================
vq          ``VectorQuantizer(512, 32)`` (EMA)           ``VectorQuantize(32, 512, rotation_trick=False)``
rotation    ``VectorQuantizer(..., gradient="rotation")``  ``VectorQuantize(32, 512, rotation_trick=True)``
fsq         ``FSQuantizer((8, 8, 8))``                   ``FSQ(levels=[8, 8, 8])``
rvq         ``ResidualVectorQuantizer(64, 32, 2 stages)``  ``ResidualVQ(dim=32, num_quantizers=2, codebook_size=64)``
lfq         ``LookupFreeQuantizer(9)``                   ``LFQ(dim=9, codebook_size=512)``
factorized  ``FactorizedQuantizer(512, 32, lookup_dim=8)``  ``VectorQuantize(32, 512, codebook_dim=8, use_cosine_sim=True)``
==========  ==========================================  ==================================================

Same hyperparameters on both sides: EMA decay 0.99, commitment weight 0.25,
dead codes (EMA count below ``--dead_code_threshold``, default 1.0 as in the
trainer) re-seeded from the batch; LFQ with entropy weight 0.1, γ = 1 and
temperature 1 (``inv_temperature=1``), commitment 0.25. One call is a
training forward (statistics and EMA state updated, state carried from call
to call) and the backward pass of ``Σ w·z + mean(loss)`` (a fixed random
``w``) to the input and to the layer's parameters. dgmjax runs under
``jax.jit``; vector-quantize-pytorch runs as its users run it, eagerly, in
``train()`` mode. "fwd" is the training forward alone (no gradient).

All calls are interleaved in one loop (each repeat runs every method and
library in turn, alternating which library goes first), so that load from
other processes hits all alike; the table reports medians and the 1-minute
load average before and after the loop. The dgmjax layers also compute the
global code histogram, perplexity and codes used on every call (for FSQ and
LFQ vector-quantize-pytorch computes none of these).

    pip install -e ".[bench]"    # torch, vector-quantize-pytorch
    python bench/quantizer_layers.py [--repeats 30] [--only vq fsq] [--out layers.md]
    python bench/quantizer_layers.py --smoke   # plumbing: tiny batch, 2 repeats
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from speed_suite import machine_lines  # noqa: E402

from dgmjax.nn.quantizers import (  # noqa: E402
    FactorizedQuantizer,
    FSQuantizer,
    LookupFreeQuantizer,
    ResidualVectorQuantizer,
)
from dgmjax.nn.vq import VectorQuantizer  # noqa: E402

METHODS = ("vq", "rotation", "fsq", "rvq", "lfq", "factorized")
K, D, LEVELS, RVQ_STAGES, RVQ_CODES, LFQ_BITS, LOOKUP_DIM = 512, 32, (8, 8, 8), 2, 64, 9, 8
BETA, DECAY, ENTROPY_WEIGHT, GAMMA, TEMPERATURE = 0.25, 0.99, 0.1, 1.0, 1.0


class Method(NamedTuple):
  dim: int  # the layer's input width
  about: str  # the setting, for the table
  dgmjax: Callable  # (dead_code_threshold) -> flax module
  torch: Callable | None  # (dead_code_threshold) -> torch module, None: no equivalent
  torch_name: str


def _methods() -> dict[str, Method]:
  def vqp(**kw):
    def make(thr):
      from vector_quantize_pytorch import VectorQuantize

      return VectorQuantize(dim=D, codebook_size=K, decay=DECAY, commitment_weight=BETA,
                            threshold_ema_dead_code=thr, **kw)
    return make

  def torch_rvq(thr):
    from vector_quantize_pytorch import ResidualVQ

    return ResidualVQ(dim=D, num_quantizers=RVQ_STAGES, codebook_size=RVQ_CODES, decay=DECAY,
                      commitment_weight=BETA, threshold_ema_dead_code=thr, rotation_trick=False)

  def torch_fsq(thr):
    from vector_quantize_pytorch import FSQ

    return FSQ(levels=list(LEVELS))

  def torch_lfq(thr):
    from vector_quantize_pytorch import LFQ

    return LFQ(dim=LFQ_BITS, codebook_size=2**LFQ_BITS, entropy_loss_weight=ENTROPY_WEIGHT,
               commitment_loss_weight=BETA, diversity_gamma=GAMMA)

  common = dict(beta=BETA, decay=DECAY)
  return {
      "vq": Method(D, f"K={K}, D={D}, EMA",
                   lambda thr: VectorQuantizer(K, D, dead_code_threshold=thr, **common),
                   vqp(rotation_trick=False), "VectorQuantize"),
      "rotation": Method(D, f"K={K}, D={D}, EMA, rotation trick",
                         lambda thr: VectorQuantizer(K, D, dead_code_threshold=thr,
                                                     gradient="rotation", **common),
                         vqp(rotation_trick=True), "VectorQuantize(rotation_trick=True)"),
      "fsq": Method(len(LEVELS), f"levels {LEVELS} = {int(np.prod(LEVELS))} codes",
                    lambda thr: FSQuantizer(LEVELS), torch_fsq, "FSQ"),
      "rvq": Method(D, f"{RVQ_STAGES} stages × {RVQ_CODES} codes, D={D}, EMA",
                    lambda thr: ResidualVectorQuantizer(RVQ_CODES, D, num_stages=RVQ_STAGES,
                                                        dead_code_threshold=thr, **common),
                    torch_rvq, "ResidualVQ"),
      "lfq": Method(LFQ_BITS, f"{LFQ_BITS} bits = {2**LFQ_BITS} codes, entropy penalty",
                    lambda thr: LookupFreeQuantizer(LFQ_BITS, beta=BETA,
                                                    entropy_weight=ENTROPY_WEIGHT, gamma=GAMMA,
                                                    temperature=TEMPERATURE),
                    torch_lfq, "LFQ"),
      "factorized": Method(D, f"K={K}, D={D} → {LOOKUP_DIM}, cosine, EMA",
                           lambda thr: FactorizedQuantizer(K, D, lookup_dim=LOOKUP_DIM,
                                                           dead_code_threshold=thr, **common),
                           vqp(codebook_dim=LOOKUP_DIM, use_cosine_sim=True,
                               rotation_trick=False),
                           "VectorQuantize(codebook_dim=8, use_cosine_sim=True)"),
  }


# ----------------------------------------------------------------------------
# One timed call per library
# ----------------------------------------------------------------------------
# Both runners are stateful: ``fwd_bwd()`` and ``fwd()`` each run one call,
# carry the layer's state on to the next call, and wait for the result.
class DgmjaxRunner:
  def __init__(self, layer, x: np.ndarray, w: np.ndarray):
    self.x, self.w = jnp.asarray(x), jnp.asarray(w)
    variables = jax.jit(layer.init)(jax.random.key(0), self.x)
    self.vars = dict(variables)
    self.key = jax.random.key(1)

    def apply(params, rest, x, key):
      return layer.apply({**rest, "params": params}, x, train=True, mutable=["vq_ema"],
                         rngs={"vq_restart": key})

    # The rng key is split inside the jitted call (no extra dispatch per call).
    @jax.jit
    def fwd_bwd(variables, x, w, key):
      key, use = jax.random.split(key)
      params = variables.get("params", {})
      rest = {k: v for k, v in variables.items() if k != "params"}

      def objective(params, x):
        out, upd = apply(params, rest, x, use)
        return jnp.sum(out.z * w) + jnp.mean(out.loss), (upd, out.perplexity)

      (gp, gx), (upd, ppl) = jax.grad(objective, argnums=(0, 1), has_aux=True)(params, x)
      return {**variables, **upd}, key, gp, gx, ppl

    @jax.jit
    def fwd(variables, x, key):
      key, use = jax.random.split(key)
      params = variables.get("params", {})
      rest = {k: v for k, v in variables.items() if k != "params"}
      out, upd = apply(params, rest, x, use)
      return {**variables, **upd}, key, out.z, out.loss, out.perplexity

    self._fwd_bwd, self._fwd = fwd_bwd, fwd

  def fwd_bwd(self):
    out = self._fwd_bwd(self.vars, self.x, self.w, self.key)
    jax.block_until_ready(out)
    self.vars, self.key = out[0], out[1]

  def fwd(self):
    out = self._fwd(self.vars, self.x, self.key)
    jax.block_until_ready(out)
    self.vars, self.key = out[0], out[1]


class TorchRunner:
  def __init__(self, module, x: np.ndarray, w: np.ndarray, device: str, inv_temperature=None):
    import torch

    self.torch = torch
    self.device = torch.device(device)
    self.module = module.to(self.device).train()
    self.x = torch.tensor(x, device=self.device, requires_grad=True)
    self.w = torch.tensor(w, device=self.device)
    self.kw = {} if inv_temperature is None else {"inv_temperature": inv_temperature}

  def _sync(self):
    if self.device.type == "cuda":
      self.torch.cuda.synchronize(self.device)

  def _objective(self, out):
    loss = out[2].sum() if len(out) > 2 else 0.0  # FSQ has no loss
    return (out[0] * self.w).sum() + loss

  def fwd_bwd(self):
    self.x.grad = None
    self.module.zero_grad(set_to_none=True)
    self._objective(self.module(self.x, **self.kw)).backward()
    self._sync()

  def fwd(self):
    with self.torch.no_grad():
      self.module(self.x, **self.kw)
    self._sync()


def _timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------
def _fmt_ms(times) -> str:
  return "–" if not times else f"{1e3 * statistics.median(times):.2f}"


def _iqr(times) -> str:
  if len(times) < 2:
    return "–"
  q75, q25 = np.percentile(times, [75, 25])
  return f"{(q75 - q25) / statistics.median(times):.2f}"


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--only", nargs="+", choices=METHODS, default=list(METHODS), metavar="METHOD",
                  help=f"a subset of {list(METHODS)}")
  ap.add_argument("--batch", type=int, default=128, help="images per call")
  ap.add_argument("--tokens", type=int, default=49, help="latent positions per image (7 × 7)")
  ap.add_argument("--repeats", type=int, default=30, help="timed calls per method and library")
  ap.add_argument("--dead_code_threshold", type=float, default=1.0,
                  help="EMA count below which a code is re-seeded (both libraries; 0: off)")
  ap.add_argument("--torch_device", default="cpu", help="device of the torch modules")
  ap.add_argument("--smoke", action="store_true",
                  help="plumbing check: batch 4, 2 repeats (the figures mean nothing)")
  ap.add_argument("--out", default="", help="also write the Markdown table to this file")
  args = ap.parse_args(argv)
  if args.smoke:
    args.batch, args.repeats = 4, 2
  for name in ("batch", "tokens", "repeats"):
    if getattr(args, name) < 1:
      ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  if args.dead_code_threshold < 0:
    ap.error(f"--dead_code_threshold must be >= 0, got {args.dead_code_threshold}")

  try:
    import torch
    import vector_quantize_pytorch  # noqa: F401
    torch_note = (f"torch {torch.__version__} ({args.torch_device}, "
                  f"{torch.get_num_threads()} threads), vector-quantize-pytorch "
                  f"{_version('vector-quantize-pytorch')}")
  except ImportError as e:
    torch = None
    torch_note = f"vector-quantize-pytorch not available ({e}): pip install -e '.[bench]'"
    print(torch_note, file=sys.stderr)

  methods = _methods()
  rng = np.random.default_rng(0)
  n = args.batch * args.tokens
  runners: dict[tuple[str, str], DgmjaxRunner | TorchRunner] = {}
  first: dict[tuple[str, str], float] = {}
  missing: dict[str, str] = {}
  for name in args.only:
    m = methods[name]
    x = rng.normal(size=(args.batch, args.tokens, m.dim)).astype(np.float32)
    w = rng.normal(size=x.shape).astype(np.float32)
    runners[name, "dgmjax"] = DgmjaxRunner(m.dgmjax(args.dead_code_threshold), x, w)
    if torch is None or m.torch is None:
      missing[name] = ("no equivalent in vector-quantize-pytorch" if m.torch is None
                       else "vector-quantize-pytorch not installed")
    else:
      torch.manual_seed(0)
      runners[name, "torch"] = TorchRunner(
          m.torch(args.dead_code_threshold), x, w, args.torch_device,
          inv_temperature=1.0 / TEMPERATURE if name == "lfq" else None)
  # The first calls compile (jit) or warm up allocators; they are not timed.
  for key, r in runners.items():
    first[key] = _timed(r.fwd_bwd)
    r.fwd()

  times = {(key, kind): [] for key in runners for kind in ("fwd_bwd", "fwd")}
  load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  for rep in range(args.repeats):
    for name in args.only:
      libs = ["dgmjax", "torch"] if rep % 2 == 0 else ["torch", "dgmjax"]
      for lib in libs:
        r = runners.get((name, lib))
        if r is not None:
          times[(name, lib), "fwd_bwd"].append(_timed(r.fwd_bwd))
          times[(name, lib), "fwd"].append(_timed(r.fwd))
  load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

  backend = f"{jax.default_backend()}, {jax.device_count()} device(s), jax {jax.__version__}"
  out = ["# Quantizer layers: dgmjax vs vector-quantize-pytorch", ""] + machine_lines(backend) + [
      f"- {torch_note}",
      f"- 1-minute load average: {load_before:.2f} before the timed loop, {load_after:.2f} after",
      f"- command: `python bench/quantizer_layers.py {' '.join(argv)}`",
      f"- {n} vectors per call ({args.batch} × {args.tokens}); median of {args.repeats} "
      f"interleaved calls; dead-code threshold {args.dead_code_threshold:g}",
      ""]
  if args.smoke:
    out += ["**Smoke run: tiny batch and 2 repeats; these figures are not measurements.**", ""]
  out += ["| method | setting | vector-quantize-pytorch | dgmjax fwd+bwd (ms) | "
          "vq-pytorch fwd+bwd (ms) | speed-up (vq-pytorch / dgmjax) | dgmjax fwd (ms) | "
          "vq-pytorch fwd (ms) | IQR/median dgmjax, vq-pytorch | dgmjax first call (s) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
  for name in args.only:
    m = methods[name]
    dj, tc = times[(name, "dgmjax"), "fwd_bwd"], times.get(((name, "torch"), "fwd_bwd"), [])
    if name in missing:
      out.append(f"| {name} | {m.about} | {missing[name]} | {_fmt_ms(dj)} | – | – | "
                 f"{_fmt_ms(times[(name, 'dgmjax'), 'fwd'])} | – | {_iqr(dj)}, – | "
                 f"{first[name, 'dgmjax']:.2f} |")
      continue
    ratio = statistics.median(tc) / statistics.median(dj)
    out.append(f"| {name} | {m.about} | `{m.torch_name}` | {_fmt_ms(dj)} | {_fmt_ms(tc)} | "
               f"{ratio:.2f}× | {_fmt_ms(times[(name, 'dgmjax'), 'fwd'])} | "
               f"{_fmt_ms(times[(name, 'torch'), 'fwd'])} | {_iqr(dj)}, {_iqr(tc)} | "
               f"{first[name, 'dgmjax']:.2f} |")
  out += ["", "fwd+bwd: training forward (EMA statistics, restarts, entropies) and the "
          "gradient to the input and parameters; fwd: the training forward alone. Speed-up "
          "> 1: dgmjax is faster. The dgmjax first call includes compilation."]
  text = "\n".join(out)
  print(text)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      f.write(text + "\n")
  return 0


def _version(dist: str) -> str:
  from importlib.metadata import PackageNotFoundError, version

  try:
    return version(dist)
  except PackageNotFoundError:
    return "unknown"


if __name__ == "__main__":
  sys.exit(main())
