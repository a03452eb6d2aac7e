"""Codebook learning rules at equal steps: does EMA + dead-code restart help?

Trains the default VQ-VAE on the offline digits with four codebook settings
and prints test MSE, perplexity and codes used (all from the whole test
split), plus steps/s.

    python bench/vqvae_codebooks.py [--steps 1000] [--seeds 0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from train import vqvae

VARIANTS = {
    "codebook loss (no restart)": dict(codebook="loss"),
    "EMA, no restart": dict(codebook="ema", dead_code_threshold=0.0),
    "EMA + dead-code restart (default)": dict(codebook="ema"),
    "EMA + restart + k-means init": dict(codebook="ema", kmeans_init=True),
}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--steps", type=int, default=1000)
  ap.add_argument("--seeds", type=int, nargs="+", default=[0])
  args = ap.parse_args()
  rows = []
  for name, over in VARIANTS.items():
    runs = []
    for seed in args.seeds:
      config = vqvae.get_config()
      config.update(dict(num_steps=args.steps, seed=seed, quiet=True,
                         checkpoint_every=args.steps, log_every=100, **over))
      with tempfile.TemporaryDirectory() as wd:
        runs.append(vqvae.train_and_evaluate(config, wd))
    k = runs[0]["num_codes"]

    def agg(key, scale=1.0, runs=runs):
      vals = [r.get(key, float("nan")) * scale for r in runs]
      if len(vals) == 1:
        return f"{vals[0]:.4g}"
      return f"{statistics.mean(vals):.4g} ± {statistics.stdev(vals):.2g}"

    rows.append((name, agg("test/mse"), agg("test/perplexity"), agg("test/perplexity", 1 / k),
                 agg("test/codes_used", 100), agg("perf/steps_per_sec")))
  print(f"VQ-VAE on offline digits, {args.steps} steps, batch 128, K=512, D=32, "
        f"seeds {args.seeds}\n")
  print("| codebook | test MSE | perplexity | perplexity / K | codes used % | steps/s |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
  main()
