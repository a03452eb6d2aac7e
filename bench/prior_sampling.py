"""Speed of sampling a token prior: cached autoregressive vs sequence length, and MaskGIT.

The default transformer of ``train.prior`` (its ``get_config()``: 4 layers,
width 64, 4 heads) over K = 512 codes (the default ``train.vqvae``), randomly
initialised (sampling speed does not depend on what the weights learned):

* **autoregressive, KV cache** (:func:`dgmjax.sampling.autoregressive_sample`,
  its default cache grown in ``CACHE_BLOCKS`` blocks, and ``cache_blocks=1``,
  the whole cache read at every step) at 49 tokens (a 7×7 grid, the default
  VQ-VAE on 28×28 digits) and 196 tokens (14×14, a tokenizer with one
  downsampling fewer). With the cache each new
  token costs one position's work plus attention over the cache, so 4× the
  tokens should cost about 4× the time (target: ratio ≤ 5×); recomputing
  every prefix without a cache would be about 16×;
* **MaskGIT** (:func:`dgmjax.sampling.maskgit_sample`, ``--maskgit-steps``, 8
  by default) at 49 tokens: ``T`` full bidirectional passes instead of 49
  one-position steps;
* with ``--recompute``: the cache-free sampler (the whole causal model run on
  the whole sequence for each position) at both lengths, for the 16× figure;
* with ``--anatomy``: what one cached step spends, per step of a scan over N
  positions at both lengths: writing every layer's keys and values into the
  cache (``dynamic_update_slice``), reading the whole cache as the attention
  does (the score product of each layer's k and v arrays), and drawing the
  Gumbel noise of the sampler for ``(batch, K)`` logits.

Each contender is called once to compile (its first-call time is reported),
then the repeats are interleaved (A, B, C, A, B, C, ...) so load from other
processes hits all alike; the table gives medians. The 1-minute load average
is printed at the start and at the end: a figure taken while it was high is
not a speed figure.

Run (the figures in README/docs come from this)::

    python bench/prior_sampling.py                    # batch 256, 10 repeats
    python bench/prior_sampling.py --batch 64 --repeats 20 --recompute --out prior_sampling.md
    python bench/prior_sampling.py --smoke            # a tiny model: does the script work?
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import sampling
from dgmjax.nn.transformer import TokenTransformer
from train import prior


def load_average() -> str:
  return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def _init(model: TokenTransformer):
  return jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, model.seq_len), jnp.int32))


def cached_sampler(model: TokenTransformer, batch: int, blocks: int = sampling.CACHE_BLOCKS):
  params = _init(model)
  return lambda key: sampling.autoregressive_sample(key, model, params, batch_size=batch,
                                                    cache_blocks=blocks)


def maskgit_sampler(model: TokenTransformer, batch: int, steps: int):
  params = _init(model)
  return lambda key: sampling.maskgit_sample(key, model, params, batch_size=batch,
                                             num_steps=steps)


def recompute_sampler(model: TokenTransformer, batch: int):
  """Ancestral sampling without a cache: the full model on the whole sequence per position."""
  params = _init(model)
  apply = model.apply

  @jax.jit
  def run(key):
    def step(tokens, prev, index):
      # Write x_{index-1}, then read the logits of position index; causality
      # makes the not-yet-sampled positions irrelevant.
      tokens = jnp.where(index > 0, tokens.at[:, jnp.maximum(index - 1, 0)].set(prev), tokens)
      logits = apply(params, tokens)
      return jax.lax.dynamic_index_in_dim(logits, index, axis=1, keepdims=False), tokens

    init = jnp.zeros((batch, model.seq_len), jnp.int32)
    return sampling.sample_sequence.__wrapped__(key, step, init, batch_size=batch,
                                                length=model.seq_len)

  return run


def anatomy(arch: dict, batch: int, vocab: int, repeats: int) -> list[str]:
  """Per-step ms of the cache write, the cache read and the Gumbel noise."""
  heads, head_dim = arch["num_heads"], arch["width"] // arch["num_heads"]
  arrays = 2 * arch["num_layers"]  # k and v per layer

  def per_step(fn, *args, n):
    jax.block_until_ready(fn(*args))
    t = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      t.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(t) / n

  rows = []
  for n in (49, 196):
    caches = tuple(jnp.zeros((batch, heads, n, head_dim)) for _ in range(arrays))
    x = jnp.ones((batch, heads, head_dim))

    @jax.jit
    def write(caches, x, n=n):
      def body(c, i):
        new = (x * i.astype(x.dtype))[:, :, None, :]
        return tuple(jax.lax.dynamic_update_slice(a, new, (0, 0, i, 0)) for a in c), None
      return jax.lax.scan(body, caches, jnp.arange(n))[0]

    @jax.jit
    def read(caches, x, n=n):
      def body(q, i):
        s = sum(jnp.einsum("bhd,bhnd->bhn", q, a).sum(-1) for a in caches)
        return q + 1e-9 * s[..., None], None
      return jax.lax.scan(body, x, jnp.arange(n))[0]

    @jax.jit
    def noise(key, n=n):
      def body(c, k):
        return c, sampling.sample_categorical(k, jnp.zeros((batch, vocab)))
      return jax.lax.scan(body, 0, jax.random.split(key, n))[1]

    mb = arrays * batch * heads * n * head_dim * 4 / 2**20
    rows.append(f"| {n} | {mb:.1f} | {per_step(write, caches, x, n=n):.2f} | "
                f"{per_step(read, caches, x, n=n):.2f} | "
                f"{per_step(noise, jax.random.key(0), n=n):.2f} |")
  return ["", f"Anatomy of one cached step (batch {batch}, ms per step, median of {repeats}):", "",
          "| tokens N | cache (MiB) | write k, v | read the cache | Gumbel noise (batch x K) |",
          "|---|---|---|---|---|", *rows]


def time_call(fn, key) -> float:
  t0 = time.perf_counter()
  jax.block_until_ready(fn(key))
  return time.perf_counter() - t0


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch", type=int, default=256, help="samples per call (train.prior "
                  "samples in batches of eval_batch_size = 256)")
  ap.add_argument("--repeats", type=int, default=10)
  ap.add_argument("--vocab", type=int, default=512, help="codes K (train.vqvae's num_codes)")
  ap.add_argument("--maskgit-steps", type=int, default=8)
  ap.add_argument("--recompute", action="store_true",
                  help="also time the cache-free sampler (slow: O(N^2) work)")
  ap.add_argument("--anatomy", action="store_true",
                  help="also time a cached step's parts: cache write, cache read, Gumbel noise")
  ap.add_argument("--smoke", action="store_true",
                  help="a tiny model, batch 4, 2 repeats: checks the script, measures nothing")
  ap.add_argument("--out", default="", help="also write the table to this file")
  args = ap.parse_args(argv)
  cfg = prior.get_config()
  arch = dict(num_layers=cfg.num_layers, width=cfg.width, num_heads=cfg.num_heads)
  if args.smoke:
    arch = dict(num_layers=1, width=16, num_heads=2)
    args.batch, args.repeats, args.vocab = 4, 2, 16
  load_start = load_average()

  def model(n, causal=True):
    return TokenTransformer(vocab_size=args.vocab, seq_len=n, causal=causal, **arch)

  g = sampling.CACHE_BLOCKS
  contenders = {
      f"autoregressive, KV cache in {g} blocks (default), 49 tokens": cached_sampler(
          model(49), args.batch),
      f"autoregressive, KV cache in {g} blocks (default), 196 tokens": cached_sampler(
          model(196), args.batch),
      f"MaskGIT, {args.maskgit_steps} steps, 49 tokens": maskgit_sampler(
          model(49, causal=False), args.batch, args.maskgit_steps),
      "autoregressive, whole KV cache (cache_blocks=1), 49 tokens": cached_sampler(
          model(49), args.batch, blocks=1),
      "autoregressive, whole KV cache (cache_blocks=1), 196 tokens": cached_sampler(
          model(196), args.batch, blocks=1),
  }
  if args.recompute:
    contenders["autoregressive, no cache, 49 tokens"] = recompute_sampler(model(49), args.batch)
    contenders["autoregressive, no cache, 196 tokens"] = recompute_sampler(model(196), args.batch)
  first = {name: time_call(fn, jax.random.key(1)) for name, fn in contenders.items()}
  times = {name: [] for name in contenders}
  for r in range(args.repeats):
    for name, fn in contenders.items():
      times[name].append(time_call(fn, jax.random.key(2 + r)))
  med = {name: statistics.median(t) for name, t in times.items()}
  load_end = load_average()

  names = list(contenders)
  lines = [
      f"Token-prior sampling, {arch['num_layers']} layers x width {arch['width']} "
      f"({arch['num_heads']} heads), K = {args.vocab} codes, batch {args.batch}, random init; "
      f"{jax.device_count()} {jax.default_backend()} device(s), jax {jax.__version__}; median "
      f"of {args.repeats} interleaved repeats" + (" (SMOKE: tiny model, not a measurement)"
                                                  if args.smoke else ""),
      "",
      "| sampler | ms / batch | samples/s | first call, compile included (s) | IQR / median |",
      "|---|---|---|---|---|",
  ]
  for name in names:
    q75, q25 = np.percentile(times[name], [75, 25])
    lines.append(f"| {name} | {1e3 * med[name]:.1f} | {args.batch / med[name]:,.1f} | "
                 f"{first[name]:.2f} | {(q75 - q25) / med[name]:.2f} |")
  ratio = med[names[1]] / med[names[0]]
  lines += ["", f"- time(196) / time(49), KV cache in {g} blocks: **{ratio:.2f}x** (target "
            f"<= 5x; {'met' if ratio <= 5 else 'NOT met'}; 196/49 = 4)",
            f"- time(196) / time(49), whole KV cache: {med[names[4]] / med[names[3]]:.2f}x; "
            f"{g} blocks / whole cache at 196 tokens: {med[names[1]] / med[names[4]]:.2f}x"]
  if args.recompute:
    rr = med["autoregressive, no cache, 196 tokens"] / med["autoregressive, no cache, 49 tokens"]
    lines.append(f"- time(196) / time(49), no cache: {rr:.2f}x")
  lines += [f"- MaskGIT ({args.maskgit_steps} steps) / autoregressive samples/s at 49 tokens: "
            f"{med[names[0]] / med[names[2]]:.2f}x",
            f"- 1-minute load average: {load_start} at the start, {load_end} at the end"]
  if args.anatomy:
    lines += anatomy(arch, args.batch, args.vocab, args.repeats)
    lines.append(f"- 1-minute load average after the anatomy: {load_average()}")
  text = "\n".join(lines)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
