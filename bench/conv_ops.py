"""Per-op profile of the default VQ-VAE's layers: XLA (jax) against PyTorch on this CPU.

Each layer of ``train.vqvae``'s default model (batch 128, 28×28 digits) alone,
forward and forward + backward (weight and input gradients, as in training),
in three ways where they differ:

* ``xla``: the flax layer as flax computes it (``nn.Conv`` / ``nn.ConvTranspose``);
* ``phases``: transposed convolutions as one stride-1 conv per output phase
  (``dgmjax.nn.conv_transpose``, what the models use on CPU for >= 8 outputs);
* ``torch``: ``torch.nn.Conv2d`` / ``ConvTranspose2d`` eager, the same shapes.

Plus the quantiser's nearest-code search over the (6272, 512) scores:
``jnp.argmin`` against ``dgmjax.losses.vq.first_argmin``.

Figures are milliseconds per call (median of ``--repeats`` interleaved
rounds) of wall time and of process CPU time: CPU time above wall time means
more than one core was busy. One device, ``--threads`` torch threads (default:
the usable cores). Prints a markdown table and the 1-minute load average.

Run::

    pip install -e ".[bench]"
    python bench/conv_ops.py [--repeats 15] [--out conv_ops.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

B = 128
# (name, kind, input side, in channels, out channels, kernel, stride)
LAYERS = [
    ("encoder conv 4×4/2, 1→32", "conv", 28, 1, 32, 4, 2),
    ("encoder conv 4×4/2, 32→64", "conv", 14, 32, 64, 4, 2),
    ("encoder conv 3×3, 64→64", "conv", 7, 64, 64, 3, 1),
    ("res block conv 3×3, 64→32 (×4)", "conv", 7, 64, 32, 3, 1),
    ("res block conv 1×1, 32→64 (×4)", "conv", 7, 32, 64, 1, 1),
    ("decoder convT 4×4/2, 64→32", "convT", 7, 64, 32, 4, 2),
    ("decoder convT 4×4/2, 32→1", "convT", 14, 32, 1, 4, 2),
]


def _time(fn, calls: int) -> tuple[float, float]:
  c0, w0 = time.process_time(), time.perf_counter()
  for _ in range(calls):
    fn()
  return (1000 * (time.perf_counter() - w0) / calls, 1000 * (time.process_time() - c0) / calls)


def jax_layer(kind, hw, cin, cout, k, s, impl):
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from dgmjax.nn.conv_transpose import ConvTranspose

  if kind == "conv":
    pad = ((1, 1), (1, 1)) if s == 2 else "SAME"
    m = nn.Conv(cout, (k, k), strides=(s, s), padding=pad)
  elif impl == "xla":
    m = nn.ConvTranspose(cout, (k, k), strides=(s, s), padding="SAME")
  else:
    m = ConvTranspose(cout, (k, k), strides=(s, s), padding="SAME", impl="phases")
  x = jax.random.normal(jax.random.key(0), (B, hw, hw, cin))
  p = m.init(jax.random.key(1), x)
  g = jnp.ones_like(m.apply(p, x))
  fwd = jax.jit(m.apply)
  # The first layer sees data: training needs no input gradient there.
  argnums = (0,) if cin == 1 else (0, 1)
  bwd = jax.jit(jax.grad(lambda p, x: jnp.sum(m.apply(p, x) * g), argnums=argnums))
  return (lambda: jax.block_until_ready(fwd(p, x)), lambda: jax.block_until_ready(bwd(p, x)))


def torch_layer(kind, hw, cin, cout, k, s):
  import torch

  if kind == "conv":
    m = torch.nn.Conv2d(cin, cout, k, stride=s, padding=1 if s == 2 else k // 2)
  else:
    m = torch.nn.ConvTranspose2d(cin, cout, k, stride=s, padding=1)
  x = torch.randn(B, cin, hw, hw, requires_grad=cin != 1)

  def fwd():
    with torch.no_grad():
      m(x)

  def bwd():
    m.zero_grad(set_to_none=True)
    y = m(x)
    y.backward(torch.ones_like(y))

  return fwd, bwd


def argmin_pair():
  import jax
  import jax.numpy as jnp

  from dgmjax.losses import vq

  z = jax.random.normal(jax.random.key(0), (B * 49, 32))
  e = jax.random.normal(jax.random.key(1), (512, 32))
  plain = jax.jit(lambda z, e: jnp.argmin(vq.squared_distances(z, e), -1))
  ours = jax.jit(lambda z, e: vq.nearest_code(z, e))
  assert bool(jnp.all(plain(z, e) == ours(z, e)))
  return (lambda: jax.block_until_ready(plain(z, e)), lambda: jax.block_until_ready(ours(z, e)))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--repeats", type=int, default=15)
  ap.add_argument("--calls", type=int, default=10, help="calls per timed round")
  ap.add_argument("--threads", type=int, default=0, help="torch threads (0: usable cores)")
  ap.add_argument("--out", default="")
  args = ap.parse_args()
  import torch

  from dgmjax.cpu_devices import usable_cores

  threads = args.threads or usable_cores()
  torch.set_num_threads(threads)
  load0 = os.getloadavg()[0]
  rows = []
  for name, kind, hw, cin, cout, k, s in LAYERS:
    contenders = {"xla": jax_layer(kind, hw, cin, cout, k, s, "xla")}
    if kind == "convT":
      contenders["phases"] = jax_layer(kind, hw, cin, cout, k, s, "phases")
    contenders["torch"] = torch_layer(kind, hw, cin, cout, k, s)
    times = {(c, part): [] for c in contenders for part in (0, 1)}
    for fns in contenders.values():
      for f in fns:
        for _ in range(3):
          f()  # compile / warm up
    for r in range(args.repeats):
      order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
      for c in order:
        for part in (0, 1):
          times[(c, part)].append(_time(contenders[c][part], args.calls))
    med = {key: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v))
           for key, v in times.items()}
    rows.append((name, {c: (med[(c, 0)], med[(c, 1)]) for c in contenders}))
    print(name, {c: f"{med[(c, 1)][0]:.2f}" for c in contenders}, flush=True)
  plain, ours = argmin_pair()
  for f in (plain, ours):
    f()
  am = {"argmin": [], "first_argmin": []}
  for r in range(args.repeats):
    for key, f in ((("argmin", plain), ("first_argmin", ours)) if r % 2 == 0
                   else (("first_argmin", ours), ("argmin", plain))):
      am[key].append(_time(f, args.calls))
  am = {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v))
        for k, v in am.items()}
  load1 = os.getloadavg()[0]

  def cell(v):
    return f"{v[0]:.2f} ({v[1]:.2f})"

  lines = [
      f"Batch {B}, one XLA device, torch {torch.__version__} with {threads} threads; "
      f"ms per call, wall (CPU); median of {args.repeats} interleaved rounds of {args.calls} "
      f"calls. Load average {load0:.2f} at start, {load1:.2f} at end.", "",
      "| layer | xla fwd | xla fwd+bwd | phases fwd | phases fwd+bwd | torch fwd | torch fwd+bwd "
      "| fwd+bwd xla / torch |",
      "|---|---|---|---|---|---|---|---|"]
  for name, m in rows:
    ph = m.get("phases")
    ratio = f"{m['xla'][1][0] / m['torch'][1][0]:.2f}"
    if ph:
      ratio += f" (phases {ph[1][0] / m['torch'][1][0]:.2f})"
    lines.append(
        f"| {name} | {cell(m['xla'][0])} | {cell(m['xla'][1])} | "
        f"{cell(ph[0]) if ph else '—'} | {cell(ph[1]) if ph else '—'} | "
        f"{cell(m['torch'][0])} | {cell(m['torch'][1])} | "
        f"{ratio} |")
  lines += ["", f"Nearest code over (6272, 512) scores incl. the distances: jnp.argmin "
            f"{cell(am['argmin'])}, first_argmin {cell(am['first_argmin'])} ms."]
  text = "\n".join(lines)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
