"""Density-ratio trick benchmark: does a trained classifier recover a known KL?

Lecture 7, slide "Density ratio trick". Two Gaussians q1 = N(μ1, Σ1) and
q2 = N(μ2, Σ2) with a closed-form KL(q1 || q2) (3 nats by construction). A
small MLP T(x) is trained with ``density_ratio_loss`` (q1 labelled 1, q2
labelled 0) on fresh samples every step; then KL is estimated with
``kl_estimate`` = mean of T on held-out q1 samples, since the optimal logit is
log q1(x) − log q2(x). Requirement: relative error ≤ 5 % for d = 2 and d = 8.

Plain JAX + optax (no Flax), so this file shows exactly what the estimator
needs. Run: ``python bench/density_ratio_kl.py`` (about 45 s of CPU time,
~70 s wall on a shared 2-core machine). Flags: ``--steps``, ``--seeds``,
``--dims``, ``--target_kl``, ``--batch``, ``--width``, ``--n_eval``.
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dgmjax.losses.density_ratio import density_ratio_loss, kl_estimate


def gaussian_kl(mu1, cov1, mu2, cov2) -> float:
  """Closed-form KL(N(mu1, cov1) || N(mu2, cov2)) in float64."""
  d = len(mu1)
  inv2 = np.linalg.inv(cov2)
  diff = mu2 - mu1
  return float(0.5 * (np.trace(inv2 @ cov1) + diff @ inv2 @ diff - d
                      + np.linalg.slogdet(cov2)[1]
                      - np.linalg.slogdet(cov1)[1]))


def make_gaussians(d: int, seed: int, target_kl: float):
  """q1 rotated and narrower, q2 diagonal and wider; |μ1| solved for the KL."""
  rng = np.random.default_rng(1000 + seed)
  rot, _ = np.linalg.qr(rng.normal(size=(d, d)))
  cov1 = rot @ np.diag(rng.uniform(0.6, 1.2, size=d)) @ rot.T
  cov2 = np.diag(rng.uniform(1.2, 1.8, size=d) ** 2)
  direction = rng.normal(size=d)
  direction /= np.linalg.norm(direction)
  base = gaussian_kl(np.zeros(d), cov1, np.zeros(d), cov2)
  if base >= target_kl:
    raise ValueError(f"target_kl must exceed {base:.3f} for d={d}.")
  maha = direction @ np.linalg.inv(cov2) @ direction
  mu1 = direction * math.sqrt(2 * (target_kl - base) / maha)
  return mu1, cov1, np.zeros(d), cov2


def init_mlp(key, sizes):
  params = []
  for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes) - 1),
                              zip(sizes[:-1], sizes[1:], strict=True),
                              strict=True):
    params.append({"w": jax.random.normal(k, (n_in, n_out)) / math.sqrt(n_in),
                   "b": jnp.zeros(n_out)})
  return params


def mlp(params, x):
  h = x
  for layer in params[:-1]:
    h = jax.nn.gelu(h @ layer["w"] + layer["b"])
  out = params[-1]
  return (h @ out["w"] + out["b"])[..., 0]


def run(d: int, seed: int, *, steps: int, batch: int, width: int,
        target_kl: float, n_eval: int):
  mu1, cov1, mu2, cov2 = make_gaussians(d, seed, target_kl)
  true_kl = gaussian_kl(mu1, cov1, mu2, cov2)
  chol1 = jnp.asarray(np.linalg.cholesky(cov1).T, jnp.float32)
  chol2 = jnp.asarray(np.linalg.cholesky(cov2).T, jnp.float32)
  m1 = jnp.asarray(mu1, jnp.float32)
  m2 = jnp.asarray(mu2, jnp.float32)
  # Fixed input standardisation with the pooled moments of q1 and q2 (known
  # here; in practice estimated once from data).
  loc = 0.5 * (m1 + m2)
  scale = jnp.sqrt(0.5 * (jnp.diag(jnp.asarray(cov1 + cov2, jnp.float32)))
                   + 0.25 * (m1 - m2) ** 2)

  def logit(params, x):
    return mlp(params, (x - loc) / scale)

  key = jax.random.key(seed)
  key, init_key, eval_key = jax.random.split(key, 3)
  params = init_mlp(init_key, [d, width, width, 1])
  schedule = optax.cosine_decay_schedule(3e-3, steps, alpha=0.01)
  opt = optax.adam(schedule)

  def loss_fn(params, key):
    k1, k2 = jax.random.split(key)
    x1 = m1 + jax.random.normal(k1, (batch, d)) @ chol1
    x2 = m2 + jax.random.normal(k2, (batch, d)) @ chol2
    loss_p, loss_q = density_ratio_loss(logit(params, x1), logit(params, x2))
    return jnp.mean(loss_p) + jnp.mean(loss_q)

  def step(carry, key):
    params, state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, key)
    updates, state = opt.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), loss

  @jax.jit
  def train(params, key):
    keys = jax.random.split(key, steps)
    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), keys)
    return params, losses

  t0 = time.perf_counter()
  params, losses = train(params, key)
  x_eval = m1 + jax.random.normal(eval_key, (n_eval, d)) @ chol1
  t_eval = jax.jit(logit)(params, x_eval)
  est = float(kl_estimate(t_eval))
  se = float(jnp.std(t_eval)) / math.sqrt(n_eval)
  seconds = time.perf_counter() - t0
  return {"d": d, "seed": seed, "true": true_kl, "est": est, "se": se,
          "rel": abs(est - true_kl) / true_kl, "final_loss": float(losses[-1]),
          "seconds": seconds}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dims", type=int, nargs="+", default=[2, 8])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--batch", type=int, default=1024)
  parser.add_argument("--width", type=int, default=128)
  parser.add_argument("--target_kl", type=float, default=3.0)
  parser.add_argument("--n_eval", type=int, default=200_000)
  args = parser.parse_args()

  print(f"MLP {args.width}x{args.width} (gelu), Adam 3e-3 cosine, "
        f"{args.steps} steps x {args.batch}+{args.batch} fresh samples; "
        f"KL estimate on {args.n_eval} held-out q1 samples.")
  header = (f"{'d':>3} {'seed':>4} {'true KL':>8} {'estimate':>9} "
            f"{'± s.e.':>7} {'rel.err':>8} {'sec':>6}")
  print(header)
  print("-" * len(header))
  rows = []
  for d in args.dims:
    for seed in args.seeds:
      r = run(d, seed, steps=args.steps, batch=args.batch, width=args.width,
              target_kl=args.target_kl, n_eval=args.n_eval)
      rows.append(r)
      print(f"{r['d']:>3} {r['seed']:>4} {r['true']:>8.4f} {r['est']:>9.4f} "
            f"{r['se']:>7.4f} {100 * r['rel']:>7.2f}% {r['seconds']:>6.1f}",
            flush=True)
  print("-" * len(header))
  ok = True
  for d in args.dims:
    rel = [r["rel"] for r in rows if r["d"] == d]
    worst = max(rel)
    ok &= worst <= 0.05
    print(f"d={d}: mean relative error {100 * np.mean(rel):.2f}%, "
          f"worst {100 * worst:.2f}% (requirement ≤ 5%)")
  print("PASS" if ok else "FAIL")


if __name__ == "__main__":
  main()
