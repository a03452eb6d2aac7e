"""Quantizers at equal steps: VQ, rotation trick, FSQ, RVQ, LFQ, factorized codes.

Trains ``python -m train.vqvae`` once per (quantizer, seed) with the same
encoder/decoder, data, optimiser, batch and number of steps; only the
bottleneck differs, each at a comparable code budget:

==========  ==================================================  ==========================
quantizer   setting                                             vocabulary of one token
==========  ==================================================  ==========================
vq          K = 512, D = 32, EMA codebook, straight-through     512
rotation    as vq, rotation-trick gradient                      512
fsq         levels (8, 8, 8)                                    512
rvq         2 stages × 64 codes, D = 32                         64 per stage (2 tokens)
lfq         9 sign bits, entropy penalty                        512
factorized  K = 512, D = 32 projected to 8, cosine lookup       512
==========  ==================================================  ==========================

Columns (mean ± sample standard deviation over the seeds): test MSE (pixels
in [0, 1], whole test split), perplexity and codes used of the test split's
code histogram (for RVQ both stages' tokens pooled over the 64 codes), and
training steps/s from the run's ``summary.json`` (every log window after the
first, so compilation is excluded).

Every run trains in a subprocess of its own (a fresh JAX, nothing shared), one
after the other: running them in parallel would spoil steps/s. Each has its
workdir ``<workdir>/<quantizer>_seed<seed>_steps<steps>``: a finished one is
read back, not retrained; an interrupted one resumes from its last
checkpoint (``--checkpoint_every``), so a long run stopped at any point is
continued by the same command. A resumed run's steps/s covers only the part
trained after the resume (marked † in the table). ``--fresh`` deletes the
selected runs first. The table is rewritten to ``--out`` after every run.

Run::

    python bench/quantizers.py                               # 6 quantizers × 2 seeds × 2000 steps
    python bench/quantizers.py --steps 5000 --seeds 3 --out quantizers.md
    python bench/quantizers.py --only fsq lfq --set dataset=tfds:mnist
    python bench/quantizers.py --smoke                       # plumbing: tiny model, 20 steps
    python bench/quantizers.py --layers                      # layer speed vs vector-quantize-pytorch

``--layers`` runs ``bench/quantizer_layers.py`` instead (the speed of each
layer alone against vector-quantize-pytorch), with ``--only``, ``--smoke``,
``--out`` and ``--repeats`` passed on.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from speed_suite import machine_lines  # noqa: E402

QUANTIZERS = ("vq", "rotation", "fsq", "rvq", "lfq", "factorized")

# Config overrides of each quantizer over train.vqvae's defaults (K = 512,
# D = 32, EMA, dead-code restart below one use per batch).
SETTINGS = {
    "vq": dict(quantizer="vq", num_codes=512),
    "rotation": dict(quantizer="rotation", num_codes=512),
    "fsq": dict(quantizer="fsq", levels=(8, 8, 8)),
    "rvq": dict(quantizer="rvq", num_codes=64, num_stages=2),
    "lfq": dict(quantizer="lfq", num_codes=512),
    "factorized": dict(quantizer="factorized", num_codes=512, lookup_dim=8),
}
VOCABULARY = {"rvq": "64 per stage × 2"}

# A plumbing check, not a result: small model and data, a few steps (two log
# windows, so that steps/s exists).
SMOKE = dict(data_limit=256, batch_size=32, eval_batch_size=64, channels=(8, 8),
             res_hidden=8, num_res_blocks=1, num_images=8)

# Keys that do not change what a run computes: they may differ between the
# saved config.json and a later invocation.
_IGNORED_KEYS = {"quiet", "checkpoint_every", "keep_checkpoints", "log_every", "num_images",
                 "image_every"}
_RESULT = "BENCH_QUANTIZERS "
_RUN_NOTE = "bench_run.json"


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def run_dir(root: str, quantizer: str, seed: int, steps: int) -> str:
  return os.path.join(root, f"{quantizer}_seed{seed}_steps{steps}")


# ----------------------------------------------------------------------------
# The worker: one (quantizer, seed), in its own process
# ----------------------------------------------------------------------------
def make_config(quantizer: str, seed: int, args):
  from train import vqvae

  config = vqvae.get_config()
  if args.smoke:
    config.update(SMOKE)
  config.update(SETTINGS[quantizer])
  for item in args.set:
    key, value = item.split("=", 1)
    if key not in config:
      raise SystemExit(f"--set {item}: train.vqvae has no config key {key!r}")
    config[key] = _parse_value(value)
  config.update(dict(num_steps=args.steps, seed=seed, quiet=True,
                     log_every=max(1, min(100, args.steps // 10)),
                     checkpoint_every=max(1, min(args.checkpoint_every, args.steps))))
  return config


def _config_diff(saved: dict, config) -> tuple[list[str], list[str]]:
  """Keys whose values differ, and keys that only one side has (a trainer
  that gained or lost a config key since the run was made)."""
  now = json.loads(config.to_json())
  both = (set(saved) & set(now)) - _IGNORED_KEYS
  return (sorted(k for k in both if saved[k] != now[k]),
          sorted((set(saved) ^ set(now)) - _IGNORED_KEYS))


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _last_checkpoint(workdir: str) -> int:
  ck = os.path.join(workdir, "checkpoints")
  steps = [int(d) for d in os.listdir(ck) if d.isdigit()] if os.path.isdir(ck) else []
  return max(steps, default=0)


def worker(quantizer: str, seed: int, args) -> dict:
  from train import vqvae

  config = make_config(quantizer, seed, args)
  workdir = run_dir(args.workdir, quantizer, seed, args.steps)
  saved = _read_json(os.path.join(workdir, "config.json"))
  if saved is not None:
    diff, one_side = _config_diff(saved, config)
    if diff:
      raise SystemExit(
          f"{workdir} holds a run with a different config ({', '.join(diff)}); delete it or "
          f"pass --fresh to retrain it.")
    if one_side:
      print(f"note: {workdir} was made when train.vqvae's config keys differed "
            f"({', '.join(one_side)}); reusing it (--fresh retrains).", file=sys.stderr)
  summary = _read_json(os.path.join(workdir, "summary.json"))
  note = _read_json(os.path.join(workdir, _RUN_NOTE)) or {}
  cached = summary is not None and saved is not None and summary.get("step") == args.steps
  if not cached:
    resumed_from = _last_checkpoint(workdir)
    t0 = time.perf_counter()
    summary = vqvae.train_and_evaluate(config, workdir)
    note = {"resumed_from_step": resumed_from, "wall_s": time.perf_counter() - t0}
    with open(os.path.join(workdir, _RUN_NOTE), "w") as f:
      json.dump(note, f)
  return {
      "quantizer": quantizer, "seed": seed, "cached": cached, "workdir": workdir,
      "test_mse": summary["test/mse"], "perplexity": summary["test/perplexity"],
      "codes_used": summary["test/codes_used"], "vocab": summary["num_codes"],
      "steps_per_sec": summary.get("perf/steps_per_sec"),
      "resumed_from_step": note.get("resumed_from_step", 0), "wall_s": note.get("wall_s"),
      "backend": summary.get("backend"), "devices": summary.get("devices"),
      "config": {k: config[k] for k in ("dataset", "batch_size", "learning_rate", "channels",
                                        "num_res_blocks", "res_hidden", "code_dim",
                                        "data_limit")},
  }


# ----------------------------------------------------------------------------
# The parent: one subprocess per run, the table
# ----------------------------------------------------------------------------
def run_one(quantizer: str, seed: int, args) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", quantizer, "--seed", str(seed),
         "--steps", str(args.steps), "--workdir", args.workdir,
         "--checkpoint_every", str(args.checkpoint_every)]
  cmd += ["--smoke"] * args.smoke
  for item in args.set:
    cmd += ["--set", item]
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  try:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=args.timeout or None)
  except subprocess.TimeoutExpired:
    return {"quantizer": quantizer, "seed": seed, "error": f"stopped after {args.timeout}s"}
  for line in proc.stderr.splitlines():
    if line.startswith("note: "):
      print(line, file=sys.stderr, flush=True)
  for line in proc.stdout.splitlines():
    if line.startswith(_RESULT):
      return json.loads(line[len(_RESULT):])
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-4:]
  return {"quantizer": quantizer, "seed": seed,
          "error": f"exit {proc.returncode}: " + " / ".join(tail)}


def _mean_sd(values, spec: str) -> str:
  vals = [v for v in values if v is not None and math.isfinite(v)]
  if not vals:
    return "–"
  mean = sum(vals) / len(vals)
  if len(vals) == 1:
    return format(mean, spec)
  sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
  return f"{format(mean, spec)} ± {format(sd, spec)}"


def render(results: list[dict], args, pending: int) -> str:
  ok = [r for r in results if "error" not in r]
  backend = f"{ok[0]['backend']}, {ok[0]['devices']} device(s)" if ok else ""
  out = ["# Quantizers at equal steps (train.vqvae)", ""] + machine_lines(backend) + [
      f"- command: `python bench/quantizers.py {' '.join(args.argv)}`"]
  if ok:
    c = ok[0]["config"]
    data = c["dataset"] + (f" (first {c['data_limit']} images)" if c["data_limit"] else "")
    out.append(f"- setup: {data}, {args.steps} steps, batch {c['batch_size']}, Adam {c['learning_rate']}, "
               f"encoder/decoder channels {tuple(c['channels'])} with {c['num_res_blocks']} "
               f"residual blocks of {c['res_hidden']}; mean ± sample std over seeds "
               f"{args.seeds}")
  if pending:
    out.append(f"- {pending} run(s) not finished yet")
  out.append("")
  if args.smoke:
    out += ["**Smoke run: tiny model, a few steps; these figures are not results.**", ""]
  out += ["| quantizer | vocabulary | test MSE | perplexity | codes used (of the vocabulary) | "
          "steps/s | seeds |", "|---|---|---|---|---|---|---|"]
  for q in args.only:
    rows = [r for r in results if r["quantizer"] == q]
    good = [r for r in rows if "error" not in r]
    failed = [r for r in rows if "error" in r]
    if not good:
      if failed:
        out.append(f"| {q} | failed: {failed[0]['error']} ||||||")
      continue
    vocab = VOCABULARY.get(q, str(good[0]["vocab"]))
    resumed = any(r["resumed_from_step"] for r in good)
    out.append(
        f"| {q} | {vocab} | {_mean_sd([r['test_mse'] for r in good], '.5f')} | "
        f"{_mean_sd([r['perplexity'] for r in good], '.1f')} | "
        f"{_mean_sd([r['codes_used'] * r['vocab'] for r in good], '.0f')} | "
        f"{_mean_sd([r['steps_per_sec'] for r in good], '.1f')}{' †' if resumed else ''} | "
        f"{', '.join(str(r['seed']) for r in good)}"
        f"{' (failed: ' + ', '.join(str(r['seed']) for r in failed) + ')' if failed else ''} |")
  out += ["", "Perplexity and codes used come from the test split's code histogram "
          "(exp of its entropy; codes seen at least once). † a run was resumed: its steps/s "
          "covers only the steps after the resume."]
  return "\n".join(out) + "\n"


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--only", nargs="+", choices=QUANTIZERS, default=list(QUANTIZERS),
                  metavar="QUANTIZER", help=f"a subset of {list(QUANTIZERS)}")
  ap.add_argument("--steps", type=int, default=2000, help="training steps of every run")
  ap.add_argument("--seeds", type=int, default=2, help="seeds 0 .. N-1 per quantizer")
  ap.add_argument("--workdir", default=os.path.join(ROOT, "workdir", "bench_quantizers"),
                  help="one run folder per (quantizer, seed, steps) under this")
  ap.add_argument("--checkpoint_every", type=int, default=500,
                  help="checkpoint period (how much an interrupted run retrains)")
  ap.add_argument("--fresh", action="store_true", help="delete the selected runs first")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="any other train.vqvae config key, for every run")
  ap.add_argument("--smoke", action="store_true",
                  help="plumbing check: tiny model and data, 20 steps, 1 seed, own workdir")
  ap.add_argument("--out", default="", help="also write the Markdown table to this file")
  ap.add_argument("--timeout", type=int, default=0, help="seconds per run (0: none)")
  ap.add_argument("--layers", action="store_true",
                  help="run bench/quantizer_layers.py (layer speed vs vector-quantize-pytorch)")
  ap.add_argument("--repeats", type=int, default=30, help="with --layers: timed calls")
  ap.add_argument("--worker", choices=QUANTIZERS, help=argparse.SUPPRESS)
  ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  args.argv = argv

  if args.layers:
    import quantizer_layers

    passed = ["--only", *args.only, "--repeats", str(args.repeats)]
    passed += ["--smoke"] * args.smoke + (["--out", args.out] if args.out else [])
    return quantizer_layers.main(passed)
  if args.worker:
    print(_RESULT + json.dumps(worker(args.worker, args.seed, args)), flush=True)
    return 0

  if args.smoke:
    if "--steps" not in argv:
      args.steps = 20
    if "--seeds" not in argv:
      args.seeds = 1
    if "--workdir" not in argv:
      args.workdir = os.path.join(ROOT, "workdir", "bench_quantizers_smoke")
  if args.steps < 20:
    ap.error(f"--steps must be >= 20 (steps/s skips the first log window), got {args.steps}")
  if args.seeds < 1:
    ap.error(f"--seeds must be >= 1, got {args.seeds}")
  if args.checkpoint_every < 1:
    ap.error(f"--checkpoint_every must be >= 1, got {args.checkpoint_every}")
  for item in args.set:
    if "=" not in item:
      ap.error(f"--set takes KEY=VALUE, got {item!r}")
  args.workdir = os.path.abspath(args.workdir)
  seeds = list(range(args.seeds))
  args.seeds = seeds
  if args.fresh:
    for q in args.only:
      for s in seeds:
        shutil.rmtree(run_dir(args.workdir, q, s, args.steps), ignore_errors=True)

  results = []
  total = len(args.only) * len(seeds)
  for s in seeds:  # all quantizers of a seed first: a stopped run has every row
    for q in args.only:
      t0 = time.perf_counter()
      r = run_one(q, s, args)
      results.append(r)
      if "error" in r:
        status = r["error"]
      else:
        status = "cached" if r["cached"] else f"{time.perf_counter() - t0:.0f} s"
        status += f", test MSE {r['test_mse']:.5f}"
      print(f"[{q} seed {s}] {status}", file=sys.stderr, flush=True)
      if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:  # rewritten after every run
          f.write(render(results, args, total - len(results)))
  print(render(results, args, 0))
  return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
  sys.exit(main())
