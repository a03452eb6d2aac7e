"""Speed of the VQ layer alone: dgmjax vs dm-haiku's VectorQuantizerEMA.

Both layers in the same process, same shapes (B=128 × 64 tokens, D=64, K=512),
EMA codebook in training mode, forward + backward (gradient w.r.t. the
encoder output of sum(z_st) + loss) + EMA update, under ``jax.jit``.
Measurements are interleaved (A, B, A, B, ...) so that load from other
processes hits both alike; we report medians.

    pip install -e ".[bench]"   # dm-haiku
    python bench/vq_layer_speed.py [--repeats 30] [--batch 128] [--tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.nn.vq import VectorQuantizer


def dgmjax_step(k: int, d: int, restart: bool):
  layer = VectorQuantizer(k, d, use_ema=True, decay=0.99,
                          dead_code_threshold=1.0 if restart else 0.0)

  def init(x):
    return layer.init(jax.random.key(0), x)

  @jax.jit
  def step(variables, x, key):
    def f(x):
      out, upd = layer.apply(variables, x, train=True, mutable=["vq_ema"],
                             rngs={"vq_restart": key})
      return jnp.sum(out.z) + jnp.mean(out.loss), (upd, out.perplexity)

    g, (upd, ppl) = jax.grad(f, has_aux=True)(x)
    return g, {**variables, **upd}, ppl

  return init, step


def haiku_step(k: int, d: int):
  import haiku as hk

  def fwd(x):
    vq = hk.nets.VectorQuantizerEMA(embedding_dim=d, num_embeddings=k,
                                    commitment_cost=0.25, decay=0.99)
    return vq(x, is_training=True)

  t = hk.transform_with_state(fwd)

  def init(x):
    return t.init(jax.random.key(0), x)

  @jax.jit
  def step(params_state, x, key):
    params, state = params_state

    def f(x):
      out, new_state = t.apply(params, state, None, x)
      return jnp.sum(out["quantize"]) + out["loss"], (new_state, out["perplexity"])

    g, (new_state, ppl) = jax.grad(f, has_aux=True)(x)
    return g, (params, new_state), ppl

  return init, step


def time_one(step, state, x, key) -> float:
  t0 = time.perf_counter()
  out = step(state, x, key)
  jax.block_until_ready(out)
  return time.perf_counter() - t0


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--tokens", type=int, default=64)
  ap.add_argument("--dim", type=int, default=64)
  ap.add_argument("--codes", type=int, default=512)
  ap.add_argument("--repeats", type=int, default=30)
  ap.add_argument("--peak-gflops", type=float, default=332.8,
                  help="CPU fp32 peak; default: 2 cores x 2.6 GHz x 64 FLOP/cycle (AVX-512, 2 FMA)")
  args = ap.parse_args()
  n = args.batch * args.tokens
  x = jax.random.normal(jax.random.key(1), (args.batch, args.tokens, args.dim))
  key = jax.random.key(2)

  contenders = {
      "dgmjax VectorQuantizer (EMA)": dgmjax_step(args.codes, args.dim, restart=False),
      "dgmjax VectorQuantizer (EMA + dead-code restart)": dgmjax_step(args.codes, args.dim, True),
  }
  try:
    contenders["haiku VectorQuantizerEMA"] = haiku_step(args.codes, args.dim)
  except ImportError:
    print("dm-haiku not installed: pip install -e '.[bench]'")

  states, compile_s = {}, {}
  for name, (init, step) in contenders.items():
    states[name] = init(x)
    compile_s[name] = time_one(step, states[name], x, key)
  times = {name: [] for name in contenders}
  for _ in range(args.repeats):
    for name, (_, step) in contenders.items():
      times[name].append(time_one(step, states[name], x, key))

  # Distances need one (N, D) x (D, K) matmul: 2·N·K·D FLOPs. That is the
  # useful work; haiku also spends two more matmuls of that size on one-hot
  # products (lookup and EMA sums), which we count for it separately.
  useful = 2.0 * n * args.codes * args.dim
  print(f"VQ layer, fwd+bwd+EMA under jit; B={args.batch} x {args.tokens} tokens, "
        f"D={args.dim}, K={args.codes}; {jax.device_count()} {jax.default_backend()} device(s); "
        f"median of {args.repeats}\n")
  print("| layer | ms/step | tokens/s | first call (s) | % of fp32 peak (distance matmul) |")
  print("|---|---|---|---|---|")
  med = {}
  for name in contenders:
    m = statistics.median(times[name])
    med[name] = m
    print(f"| {name} | {m * 1e3:.2f} | {n / m:,.0f} | {compile_s[name]:.2f} | "
          f"{100 * useful / m / (args.peak_gflops * 1e9):.1f}% |")
  if "haiku VectorQuantizerEMA" in med:
    base = med["haiku VectorQuantizerEMA"]
    for name in contenders:
      if name.startswith("dgmjax"):
        print(f"\nspeed-up of {name} over haiku: {base / med[name]:.2f}x")
  print(f"\n(jax {jax.__version__}; IQR/median: " + ", ".join(
      f"{name.split()[0]}={np.subtract(*np.percentile(times[name], [75, 25])) / med[name]:.2f}"
      for name in contenders) + ")")


if __name__ == "__main__":
  main()
