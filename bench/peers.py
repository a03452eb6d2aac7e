"""Peer suite: each default trainer's train step against its PyTorch twin, interleaved.

For every model, three kinds of worker process run side by side and take
turns (ours, theirs, ours, theirs, ... for ``--rounds`` rounds of
``--steps`` steps each), so that load from other processes on the machine
hits both alike:

* **ours**: the trainer itself. Each round is one real
  ``train_and_evaluate`` of the trainer (its own ``make_task``, the harness's
  jitted step and loader: exactly what ``python -m train.<name>`` runs) over
  ``2·N`` steps logged every ``N``; the first window (the ``N − 1`` steps after
  the compiling step) is the warm-up and the second window's steps/s (the
  harness's own figure in ``metrics.jsonl``, metrics read back to the host
  included) is the round's figure. The compiling first step is
  ``perf/first_step_s`` of the first round. The evaluations that run once at
  the end of a run are turned down (as in ``bench/speed_suite.py``) and are
  outside the timing anyway.
* **theirs**: the PyTorch twin (``bench/torch_twins.py``), eager, warmed up
  with ``--warmup`` steps once, then ``N`` steps per round; batches come
  from the same loader (``dgmjax.data.BatchLoader``, the trainer's pixel
  format) inside the timing, metrics read back once per round.
* **compiled** (``--compile``, VQ-VAE only): the twin with its forward/loss
  under ``torch.compile``; if compiling fails the column says why.

PyTorch gets as many threads as this process may use (``torch.set_num_threads``),
which is what XLA's CPU thread pool uses. The table gives steps/s (median
over rounds and min–max), the ratio ours/theirs (of the medians, and the
range of the per-round ratios), first-step times, both parameter counts
(ours read from the trainer's checkpoint; they must be equal, or the run
fails) and the 1-minute load average at the start and end.

Run::

    pip install -e ".[bench]"                   # torch (CPU wheel) among the extras
    python bench/peers.py --check               # twins vs flax: outputs, losses, gradients
    python bench/peers.py                       # all models, default steps, 5 rounds
    python bench/peers.py --only vqvae --compile --rounds 7 --out peers.md
    python bench/peers.py --smoke               # 2 rounds of 2 steps: does it run?

``--check`` builds the flax models from ``dgmjax`` with the trainer's config,
proves they are the trainer's (their parameter shapes equal those of a
one-step run of the trainer, read from its checkpoint), copies their
parameters into the twins and compares encoder/decoder outputs, loss terms
and every parameter's gradient; it exits non-zero on any mismatch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")

# name: (trainer module, config overrides, default steps per round). Model,
# optimizer and batch stay at the trainer's defaults; only the once-per-run
# evaluations are turned down. Default steps give rounds of a few seconds.
TASKS = {
    "vqvae": ("vqvae", {}, 40),
    "dvae": ("dvae", dict(iwae_samples=0), 400),
    "dvae_conv": ("dvae", dict(model="dvae", iwae_samples=0), 40),
    "vae": ("vae", dict(iwae_k=1, iwae_chunk=1, iwae_k_train=0), 300),
    "gan_digits": ("gan", dict(dataset="digits", num_eval_samples=100, classifier_steps=1), 10),
}
COMPILE_TASKS = ("vqvae",)
MARK = "PEERS "  # worker replies on stdout start with this; anything else is ignored


def _threads() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def _load1() -> float | None:
  return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _config(name: str):
  """The trainer's default config plus this bench's overrides (imports the trainer)."""
  import importlib

  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  module_name, over, _ = TASKS[name]
  module = importlib.import_module(f"train.{module_name}")
  config = module.get_config()
  config.update(over)
  return module, config


# ----------------------------------------------------------------------------
# Workers
# ----------------------------------------------------------------------------
def _param_count(meta) -> dict[str, int]:
  """Trainable parameters per player from a checkpoint's state metadata tree."""

  def size(tree) -> int:
    if isinstance(tree, dict):
      return sum(size(v) for v in tree.values())
    shape = getattr(tree, "shape", None)
    return math.prod(shape) if shape is not None else 0

  if "params" in meta and "opt_state" in meta:  # one TrainState
    return {"model": size(meta["params"])}
  players = {"gen": "G", "disc": "D"}  # the GAN's state, named (and ordered) as the twin's
  return {name: size(meta[key]["params"]) for key, name in players.items() if key in meta}


def checkpoint_params(workdir: str):
  """The ``params`` subtree(s) of the latest checkpoint's state, as orbax metadata."""
  import logging

  import orbax.checkpoint as ocp

  ckpt = os.path.join(workdir, "checkpoints")
  step = max(int(s) for s in os.listdir(ckpt) if s.isdigit())
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)  # "metadata file does not exist": harmless here
  try:
    meta = ocp.PyTreeCheckpointer().metadata(os.path.join(ckpt, str(step), "state"))
  finally:
    absl_logger.setLevel(level)
  return meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta


class OursWorker:
  """Rounds of the real trainer (``train_and_evaluate``), one fresh workdir each."""

  def __init__(self, name: str, args):
    import jax

    self.name = name
    self.module, _ = _config(name)
    self.root = tempfile.mkdtemp(prefix=f"peers_{name}_")
    self.rounds = 0
    # Nothing here may start JAX's backends: the trainer sets the CPU device
    # count before they start (config.cpu_devices), as in a fresh
    # `python -m train.<name>`. Backend and devices come from its summary.
    self.info = {"version": f"jax {jax.__version__}"}

  def round(self, steps: int) -> dict:
    config = self.module.get_config()
    config.update(TASKS[self.name][1])
    workdir = os.path.join(self.root, f"round{self.rounds}")
    config.update(dict(num_steps=2 * steps, log_every=steps, checkpoint_every=2 * steps,
                       eval_every=0, image_every=0, quiet=True))
    if "classifier_dir" in config:
      config.classifier_dir = os.path.join(self.root, "classifier")
    summary = self.module.train_and_evaluate(config, workdir)
    rows = []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(ln) for ln in f if ln.strip()]
    timed = [r for r in rows if r.get("step") == 2 * steps and "perf/steps_per_sec" in r]
    if not timed:
      raise RuntimeError(f"no timed log window at step {2 * steps} in metrics.jsonl")
    out = {"steps_per_sec": timed[-1]["perf/steps_per_sec"],
           "first_step_s": summary.get("perf/first_step_s"), "batch_size": config.batch_size,
           "backend": summary.get("backend"), "devices": summary.get("devices")}
    if self.rounds == 0:
      out["params"] = _param_count(checkpoint_params(workdir))
    shutil.rmtree(workdir, ignore_errors=True)
    self.rounds += 1
    return out

  def close(self) -> None:
    shutil.rmtree(self.root, ignore_errors=True)


def _image_transform(pixel_format: str):
  """The trainer loader's per-batch transform (``train.harness.image_transform``)."""
  from dgmjax.data import pixels

  def transform(batch, rng):
    return {**batch, "image": pixels.format_images(batch["image"], pixel_format, rng)}

  return transform


def _loader(config):
  """The trainer's training loader, on the host: same data, pixel format, shuffling."""
  from dgmjax import data as dgdata

  ds = dgdata.load_image_dataset(config.dataset, data_dir=config.data_dir or None,
                                 pixel_format=config.pixel_format,
                                 limit=config.data_limit or None)
  loader = dgdata.BatchLoader({"image": ds.train_images, "label": ds.train_labels},
                              batch_size=config.batch_size, seed=config.seed,
                              transform=_image_transform(config.pixel_format))
  return loader, ds.image_shape


class TheirsWorker:
  """The PyTorch twin, kept across rounds (eager, or its forward under torch.compile)."""

  def __init__(self, name: str, args, compiled: bool = False):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sys.path.insert(0, BENCH)
    import torch_twins

    self.torch_twins = torch_twins
    _, config = _config(name)
    self.loader, image_shape = _loader(config)
    self.twin = torch_twins.make_twin(name, config, image_shape)
    if compiled:
      self.twin.compile()
    self.info = {"version": f"torch {torch.__version__}", "threads": torch.get_num_threads(),
                 "params": self.twin.num_params(), "batch_size": self.twin.batch_size}

  def warmup(self, steps: int) -> dict:
    first, _ = self.torch_twins.run_steps(self.twin, self.loader.next_numpy, 1)
    rest, metrics = self.torch_twins.run_steps(self.twin, self.loader.next_numpy,
                                               max(0, steps - 1))
    return {"first_step_s": first, "warmup_s": first + rest}

  def round(self, steps: int) -> dict:
    secs, metrics = self.torch_twins.run_steps(self.twin, self.loader.next_numpy, steps)
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
      raise FloatingPointError(f"non-finite {bad} after {self.twin.steps_done} steps")
    return {"steps_per_sec": steps / secs, "metrics": metrics}

  def close(self) -> None:
    pass


def worker_main(role: str, name: str, args) -> int:
  out = sys.stdout

  def reply(obj: dict) -> None:
    out.write(MARK + json.dumps(obj) + "\n")
    out.flush()

  try:
    worker = OursWorker(name, args) if role == "ours" else TheirsWorker(
        name, args, compiled=role == "compiled")
  except Exception as e:  # noqa: BLE001 - reported to the parent, which says why
    reply({"error": f"{type(e).__name__}: {e}"})
    return 1
  reply({"ready": True, **worker.info})
  for line in sys.stdin:
    msg = json.loads(line)
    if msg["cmd"] == "quit":
      break
    try:
      reply(getattr(worker, msg["cmd"])(msg["steps"]))
    except Exception as e:  # noqa: BLE001
      reply({"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
  worker.close()
  return 0


# ----------------------------------------------------------------------------
# The parent: workers in turn, the table
# ----------------------------------------------------------------------------
class Worker:
  """A worker subprocess spoken to by JSON lines."""

  def __init__(self, role: str, name: str, args):
    self.role, self.name = role, name
    self.log = tempfile.TemporaryFile(mode="w+")
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if role != "ours":
      # The twins' process imports jax (config, loader) but computes nothing with it:
      # keep it off any accelerator, whose memory it would otherwise reserve.
      env["JAX_PLATFORMS"] = "cpu"
    self.proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", role, name,
         "--threads", str(args.threads)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=ROOT,
        env=env)
    self.info = self._read()

  def _read(self) -> dict:
    for line in self.proc.stdout:
      if line.startswith(MARK):
        return json.loads(line[len(MARK):])
    self.proc.wait()
    self.log.seek(0)
    tail = " / ".join(self.log.read().strip().splitlines()[-4:])
    return {"error": f"worker exited with {self.proc.returncode}: {tail}"}

  def ask(self, cmd: str, steps: int) -> dict:
    if self.proc.poll() is not None:
      return {"error": "worker is not running"}
    self.proc.stdin.write(json.dumps({"cmd": cmd, "steps": steps}) + "\n")
    self.proc.stdin.flush()
    return self._read()

  def close(self) -> None:
    if self.proc.poll() is None:
      try:
        self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
      except (OSError, subprocess.TimeoutExpired):
        self.proc.kill()
        self.proc.wait()
    self.log.close()


def measure(name: str, args) -> dict:
  """One model: workers started, warmed up, then ``args.rounds`` interleaved rounds."""
  steps = args.steps or TASKS[name][2]
  roles = ["ours", "theirs"] + (["compiled"] if args.compile and name in COMPILE_TASKS else [])
  res = {"name": name, "steps": steps, "rounds": args.rounds, "load_start": _load1(),
         "roles": {}}
  workers = {}
  try:
    for role in roles:
      w = Worker(role, name, args)
      workers[role] = w
      r = {"info": w.info, "rates": [], "error": w.info.get("error")}
      if not r["error"] and role != "ours":
        warm = w.ask("warmup", args.warmup)
        r["error"] = warm.get("error")
        r["first_step_s"] = warm.get("first_step_s")
      res["roles"][role] = r
    for i in range(args.rounds):
      for role in roles:
        r = res["roles"][role]
        if r["error"]:
          continue
        out = workers[role].ask("round", steps)
        if "error" in out:
          r["error"] = out["error"]
          continue
        r["rates"].append(out["steps_per_sec"])
        if role == "ours":
          r.setdefault("first_step_s", out.get("first_step_s"))
          r.setdefault("params", out.get("params"))
          r["info"].setdefault("backend", out.get("backend"))
          r["info"].setdefault("devices", out.get("devices"))
        print(f"[{name}] round {i + 1}/{args.rounds} {role}: {out['steps_per_sec']:.2f} steps/s",
              file=sys.stderr, flush=True)
  finally:
    for w in workers.values():
      w.close()
  res["load_end"] = _load1()
  return res


def _fmt_rate(rates: list[float]) -> str:
  if not rates:
    return "–"
  med = statistics.median(rates)
  return f"{med:.2f} ({min(rates):.2f}–{max(rates):.2f})"


def _fmt_params(p: dict | None) -> str:
  if not p:
    return "–"
  if len(p) == 1:
    return f"{next(iter(p.values())):,}"
  return " + ".join(f"{k} {v:,}" for k, v in p.items())


def _ratio(a: list[float], b: list[float]) -> str:
  if not a or not b:
    return "–"
  per_round = [x / y for x, y in zip(a, b, strict=False)]
  return (f"**{statistics.median(a) / statistics.median(b):.2f}×** "
          f"({min(per_round):.2f}–{max(per_round):.2f})")


def render(results: list[dict], args, load_start, load_end) -> tuple[str, bool]:
  """The Markdown report, and whether every model ran with equal parameter counts."""
  sys.path.insert(0, BENCH)
  from speed_suite import machine_lines

  ok = True
  versions = {}
  for res in results:
    for role, r in res["roles"].items():
      info = r["info"]
      if info.get("version"):
        where = ""
        if info.get("backend"):
          n = info.get("devices") or 1
          where = f" ({info['backend']}, {n} device{'s' if n != 1 else ''})"
        versions[role] = info["version"] + where
  threads = next((r["info"]["threads"] for res in results for role, r in res["roles"].items()
                  if r["info"].get("threads")), args.threads)
  fmt_load = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
  out = ["# dgmjax peer suite: train steps against PyTorch twins", ""] + machine_lines() + [
      f"- {versions.get('ours', 'jax')} vs {versions.get('theirs', 'torch')}; threads: PyTorch "
      f"{threads} (`torch.set_num_threads`); XLA as the trainer sets it up, on "
      f"{args.threads} usable cores",
      f"- 1-minute load average: {fmt_load(load_start)} at the start, {fmt_load(load_end)} at "
      "the end",
      f"- command: `python bench/peers.py {' '.join(args.argv)}`",
      f"- interleaved rounds (ours, PyTorch{', torch.compile' if args.compile else ''}, ours, "
      f"…); PyTorch warmed up with {args.warmup} step{'s' if args.warmup != 1 else ''}; ours "
      "warms up in each round's first log window", ""]
  compile_col = args.compile and any(n in COMPILE_TASKS for n in args.only)
  head = ["model", "batch", "steps × rounds", "ours steps/s: median (min–max)",
          "PyTorch eager steps/s", "ours / eager (per-round range)"]
  if compile_col:
    head += ["torch.compile steps/s", "ours / compiled"]
  head += ["first step: ours (compile), eager" + (", compiled" if compile_col else "") + " (s)",
           "params ours", "params PyTorch", "load 1-min start → end"]
  out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  notes = []
  for res in results:
    ours, theirs = res["roles"].get("ours", {}), res["roles"].get("theirs", {})
    comp = res["roles"].get("compiled")
    p_ours, p_theirs = ours.get("params"), theirs.get("info", {}).get("params")
    same = p_ours is not None and p_ours == p_theirs
    ok = ok and same and not ours.get("error") and not theirs.get("error")
    batch = theirs.get("info", {}).get("batch_size", "–")
    firsts = [ours.get("first_step_s"), theirs.get("first_step_s")]
    row = [res["name"], str(batch), f"{res['steps']} × {res['rounds']}",
           _fmt_rate(ours.get("rates", [])), _fmt_rate(theirs.get("rates", [])),
           _ratio(ours.get("rates", []), theirs.get("rates", []))]
    if compile_col:
      if comp is None:
        row += ["–", "–"]
      elif comp.get("error"):
        row += ["skipped (see below)", "–"]
        notes.append(f"- {res['name']}, torch.compile skipped: {comp['error']}")
      else:
        row += [_fmt_rate(comp["rates"]), _ratio(ours.get("rates", []), comp["rates"])]
        firsts.append(comp.get("first_step_s"))
    row += [", ".join("–" if v is None else f"{v:.2f}" for v in firsts),
            _fmt_params(p_ours), _fmt_params(p_theirs) + ("" if same else " **(differ)**"),
            f"{fmt_load(res['load_start'])} → {fmt_load(res['load_end'])}"]
    out.append("| " + " | ".join(row) + " |")
    for role in ("ours", "theirs"):
      if res["roles"].get(role, {}).get("error"):
        notes.append(f"- {res['name']}, {role} failed: {res['roles'][role]['error']}")
  out += [""] + notes + ([""] if notes else [])
  out += ["steps/s are training steps only (data loading and reading the metrics back "
          "included, compilation and evaluation excluded). The ratio is of the medians; the "
          "range is that of the per-round ratios ours/theirs. Parameter counts: ours from the "
          "trainer's checkpoint, PyTorch from the twin's `parameters()` (EMA codebook "
          "statistics are state on both sides, not parameters).", ""]
  return "\n".join(out), ok


# ----------------------------------------------------------------------------
# --check: twins against the flax models, with the same parameters
# ----------------------------------------------------------------------------
FORWARD_TOL, GRAD_TOL, LOSS64_TOL = 1e-4, 1e-6, 1e-9


def _shapes(tree, prefix: str = "") -> dict[str, tuple]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict) or hasattr(v, "items"):
      out.update(_shapes(dict(v.items()), f"{prefix}{k}/"))
    else:
      out[f"{prefix}{k}"] = tuple(int(s) for s in v.shape)
  return out


def _trainer_param_shapes(name: str) -> dict[str, dict[str, tuple]]:
  """Per player, the parameter shapes of a one-step run of the real trainer."""
  module, config = _config(name)
  root = tempfile.mkdtemp(prefix=f"peers_check_{name}_")
  try:
    config.update(dict(num_steps=1, log_every=1, checkpoint_every=1, eval_every=0,
                       image_every=0, quiet=True))
    if "classifier_dir" in config:
      config.classifier_dir = os.path.join(root, "classifier")
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the report
      module.train_and_evaluate(config, os.path.join(root, "run"))
    meta = checkpoint_params(os.path.join(root, "run"))
  finally:
    shutil.rmtree(root, ignore_errors=True)
  if "params" in meta and "opt_state" in meta:
    return {"model": _shapes(meta["params"])}
  return {k: _shapes(v["params"]) for k, v in meta.items() if isinstance(v, dict)}


class _Report:
  def __init__(self):
    self.rows: list[tuple[str, str, float, float, bool]] = []

  def close(self, model: str, what: str, ours, theirs, tol: float = FORWARD_TOL) -> None:
    """max |ours − theirs| / max(1, max |ours|) <= tol."""
    import numpy as np

    a, b = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if a.shape != b.shape:
      self.rows.append((model, f"{what}: shapes {a.shape} vs {b.shape}", math.inf, tol, False))
      return
    err = float(np.max(np.abs(a - b))) / max(1.0, float(np.max(np.abs(a)))) if a.size else 0.0
    self.rows.append((model, what, err, tol, bool(err <= tol)))

  def grads(self, model: str, player: str, want: dict, module) -> None:
    """Every parameter's gradient: ‖torch − flax‖ / ‖flax‖ per tensor, the worst reported.

    Computed in float64 on both sides (see :func:`_check_model`); a wrong
    padding, kernel flip, layout or missing loss term is an O(1) error.
    """
    import numpy as np

    worst, worst_name, missing, n = 0.0, "", [], 0
    for key, param in module.named_parameters():
      n += 1
      if param.grad is None:
        missing.append(key)
        continue
      ref = np.asarray(want[key], np.float64)
      diff = param.grad.double().numpy() - ref
      err = float(np.linalg.norm(diff)) / max(float(np.linalg.norm(ref)), 1e-30)
      if err > worst:
        worst, worst_name = err, key
    if missing:
      self.rows.append((model, f"grad {player}: no gradient for {missing}", math.inf,
                        GRAD_TOL, False))
    self.rows.append((model, f"grad {player} (all {n} tensors; worst {worst_name or '–'})",
                      worst, GRAD_TOL, worst <= GRAD_TOL))

  def equal(self, model: str, what: str, ok: bool, detail: str = "") -> None:
    self.rows.append((model, what + (f": {detail}" if detail else ""), 0.0 if ok else math.inf,
                      0.0, ok))


def _perturbed(params, key):
  """Every leaf moved off its initial value, so zero biases and identity flows test the mapping."""
  import jax
  import jax.numpy as jnp

  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  out = []
  for k, p in zip(keys, leaves, strict=True):
    scale = 0.5 * jnp.std(p) if p.size > 1 and float(jnp.std(p)) > 0 else 0.05
    out.append(p + scale * jax.random.normal(k, p.shape, p.dtype))
  return jax.tree.unflatten(tree, out)


def _np_tree(tree, dtype=None):
  """A JAX tree as NumPy arrays (float32 unless ``dtype``)."""
  import jax
  import numpy as np

  return jax.tree.map(lambda v: np.asarray(v, dtype or np.float32), jax.device_get(tree))


def _f64(tree):
  """Floating leaves cast to float64 (inside ``jax.enable_x64``)."""
  import jax
  import jax.numpy as jnp

  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64)
                      if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a, tree)


def _check_model(name: str, rep: _Report, batch_size: int = 32) -> None:
  """Every comparison of one twin with its flax model (rows in ``rep``).

  Outputs are compared in float32, the training precision. Losses and
  gradients are compared in float64 on both sides (``jax.enable_x64`` and
  ``module.double()``), where rounding is far below any error of structure:
  in float32 a ReLU input within rounding of 0 may fall on either side of
  the kink, which moves a few gradient entries (seen: 1e-4 of a tensor's
  norm, with flax and PyTorch each agreeing with float64 on one side only).
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  from dgmjax import data as dgdata

  sys.path.insert(0, BENCH)
  import torch_twins as tt

  _, config = _config(name)
  ds = dgdata.load_image_dataset(config.dataset, pixel_format=config.pixel_format)
  rng = np.random.default_rng(0)
  x_np = dgdata.pixels.format_images(ds.test_images[:batch_size], config.pixel_format, rng)
  x_np = np.asarray(x_np, np.float32)
  x = jnp.asarray(x_np)
  shape = tuple(ds.image_shape)
  new_twin = lambda: tt.make_twin(name, config, shape)  # noqa: E731
  k_init, k_pert, k_noise, k_z = jax.random.split(jax.random.key(1), 4)
  nchw = lambda a: torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
  flat = lambda a: torch.from_numpy(np.array(a).reshape(len(a), -1))  # noqa: E731
  to_nhwc = lambda t: t.detach().permute(0, 2, 3, 1).numpy()  # noqa: E731
  f64 = np.float64

  if name == "vqvae":
    from dgmjax.nn.vqvae import VQVAE

    model = VQVAE(num_codes=config.num_codes, code_dim=config.code_dim,
                  out_channels=shape[-1], channels=tuple(config.channels),
                  num_res_blocks=config.num_res_blocks, res_hidden=config.res_hidden,
                  beta=config.beta, use_ema=True, decay=config.ema_decay,
                  dead_code_threshold=config.dead_code_threshold, quantizer="vq")
    var = model.init(k_init, x)
    params, ema = _perturbed(var["params"], k_pert), var["vq_ema"]
    mirror = {"model": params}

    def loss_fn(p, ema, x):  # the trainer's loss: MSE + mean VQ loss, EMA in training mode
      (x_rec, out, z_e), upd = model.apply({"params": p, "vq_ema": ema}, x, train=True,
                                           mutable=["vq_ema"], rngs={"vq_restart": k_noise})
      return jnp.mean((x_rec - x) ** 2) + jnp.mean(out.loss), (x_rec, out, z_e, upd)

    def load(twin, dtype=np.float32):
      tt.load_flax(twin, _np_tree(params))
      state = _np_tree(ema, dtype)["quantizer"]["state"]
      twin.codebook, twin.cluster_size, twin.embed_sum = (torch.from_numpy(np.array(a))
                                                           for a in state)
      return twin

    loss, (x_rec, out, z_e, upd) = loss_fn(params, ema, x)
    twin = load(new_twin())
    xt = nchw(x_np)
    rep.close(name, "encoder z_e (strided conv padding)", z_e, to_nhwc(twin.encoder(xt)))
    rep.close(name, "decoder on flax's z (transposed conv padding)", x_rec,
              to_nhwc(twin.decoder(nchw(out.z))))
    t_loss, _, z_flat, idx, t_rec = twin.forward_loss(xt)
    same = float(np.mean(np.asarray(out.indices).reshape(-1) == idx.numpy()))
    rep.equal(name, "nearest codes", same == 1.0, f"{100 * same:.2f}% equal")
    rep.close(name, "reconstruction", x_rec, to_nhwc(t_rec))
    rep.close(name, "loss (MSE + β·commitment)", loss, t_loss.item())
    # One EMA step, then the restart of the codes whose count fell below the
    # threshold: the restarted rows are random draws (different on the two
    # sides), so the kept codes are compared and the restarted ones counted.
    new = _np_tree(upd["vq_ema"])["quantizer"]["state"]
    twin.ema_update(z_flat, idx, restart=False)
    dead = twin.cluster_size.numpy() < config.dead_code_threshold
    rep.equal(name, "EMA: restarted codes", int(out.restarted) == int(dead.sum())
              and bool(np.all(new[1][dead] == config.dead_code_threshold)),
              f"flax {int(out.restarted)}, PyTorch {int(dead.sum())}")
    rep.close(name, "EMA: cluster sizes (codes kept)", new[1][~dead],
              twin.cluster_size.numpy()[~dead])
    rep.close(name, "EMA: codebook (codes kept)", new[0][~dead], twin.codebook.numpy()[~dead])
    with jax.enable_x64(True):
      (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          _f64(params), _f64(ema), jnp.asarray(x_np, jnp.float64))
      loss, grads = float(loss), _np_tree(grads, f64)
    twin = load(new_twin(), f64).double()
    t_loss = twin.forward_loss(xt.double())[0]
    rep.close(name, "loss, float64", loss, t_loss.item(), tol=LOSS64_TOL)
    t_loss.backward()
    rep.grads(name, "model", tt.flax_to_torch(twin, grads)["model"], twin.model)

  elif name in ("dvae", "dvae_conv"):
    from dgmjax.losses import elbo as elbo_lib
    from dgmjax.losses import gumbel, schedules
    from dgmjax.models.dvae import make_discrete_vae
    from dgmjax.nn import dvae as dvae_nn

    model = make_discrete_vae(
        model=config.model, image_shape=shape, likelihood=config.likelihood,
        learned_prior=config.prior == "learned", num_vars=config.num_vars,
        num_classes=config.num_classes, hidden=tuple(config.hidden),
        num_codes=config.num_codes, code_dim=config.code_dim, channels=tuple(config.channels),
        num_res_blocks=config.num_res_blocks, res_hidden=config.res_hidden,
        pixel_eps=config.pixel_eps, min_log_scale=config.min_log_scale)
    params = _perturbed(model.init(k_init, x), k_pert)
    mirror = {"model": params}
    tau = 0.7

    def loss_fn(p, x):  # the trainer's: relaxed codes from the library's sampler, β = 1
      logits = model.logits(p, x)
      codes = dvae_nn.sample_codes(k_noise, logits, estimator=config.estimator,
                                   temperature=tau)
      ll, kl = model.log_likelihood(p, codes, x), model.kl(p, logits)
      return -jnp.mean(elbo_lib.elbo(ll, kl, beta=1.0)), (ll, kl, logits)

    conv = name == "dvae_conv"
    layout = nchw if conv else flat  # the twin's layout of images and of the noise
    loss, (ll, kl, logits) = loss_fn(params, x)
    # The sampler draws g = gumbel_noise(key, logits.shape) from its key: the same g here.
    noise = gumbel.gumbel_noise(k_noise, logits.shape)
    twin = new_twin()
    tt.load_flax(twin, _np_tree(params))
    t_ll, t_kl, t_logits = twin.terms(layout(x_np), tau, noise=torch.from_numpy(np.array(noise))
                                      .permute(0, 3, 1, 2).contiguous() if conv
                                      else torch.from_numpy(np.array(noise)))
    rep.close(name, "encoder logits", logits, to_nhwc(t_logits) if conv else t_logits.detach())
    rep.close(name, "log p(x|c) (decoder)", ll, t_ll.detach())
    rep.close(name, "KL to uniform", kl, t_kl.detach())
    rep.close(name, "loss (−ELBO)", loss, -torch.mean(t_ll - t_kl).item())
    with jax.enable_x64(True):
      (loss, (_, _, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          _f64(params), jnp.asarray(x_np, jnp.float64))
      noise = np.asarray(gumbel.gumbel_noise(k_noise, logits.shape, jnp.float64))
      loss, grads = float(loss), _np_tree(grads, f64)
    twin = new_twin()
    tt.load_flax(twin, _np_tree(params))
    twin.double()
    g = torch.from_numpy(noise)
    t_ll, t_kl, _ = twin.terms(layout(x_np).double(), tau,
                               noise=g.permute(0, 3, 1, 2).contiguous() if conv else g)
    t_loss = -torch.mean(t_ll - t_kl)
    rep.close(name, "loss, float64", loss, t_loss.item(), tol=LOSS64_TOL)
    t_loss.backward()
    rep.grads(name, "model", tt.flax_to_torch(twin, grads)["model"], twin.model)
    tau_fn = schedules.jang_temperature_schedule(
        rate=float(config.anneal_rate), every=config.anneal_every,
        min_temperature=float(config.temperature_final),
        init_temperature=float(config.temperature_init))
    steps = [0, 999, 1000, 4321, 10_000, 100_000]
    rep.close(name, "temperature schedule", [float(tau_fn(s)) for s in steps],
              [twin.temperature(s) for s in steps], tol=1e-6)

  elif name == "vae":
    from dgmjax.losses import elbo as elbo_lib
    from dgmjax.models.vae import make_vae

    model = make_vae(arch=config.arch, image_shape=shape, latent_dim=config.latent_dim,
                     prior=config.prior, likelihood=config.likelihood,
                     pixel_format=config.pixel_format, hidden=tuple(config.hidden),
                     channels=tuple(config.channels), num_res_blocks=config.num_res_blocks,
                     res_hidden=config.res_hidden, flow_layers=config.flow_layers,
                     flow_hidden=tuple(config.flow_hidden))
    params = _perturbed(model.init(k_init, x), k_pert)
    mirror = {"model": params}
    eps = np.asarray(jax.random.normal(k_noise, (batch_size, config.latent_dim)))

    def loss_fn(p, x, eps):  # the trainer's: z = μ + σ·ε, β = 1
      mean, log_var = model.encode(p, x)
      z = mean + jnp.exp(0.5 * log_var) * eps
      ll, kl = model.log_likelihood(p, z, x), model.kl(p, z, mean, log_var)
      return -jnp.mean(elbo_lib.elbo(ll, kl, beta=1.0)), (ll, kl, mean, log_var, z)

    loss, (ll, kl, mean, log_var, z) = loss_fn(params, x, jnp.asarray(eps))
    twin = new_twin()
    tt.load_flax(twin, _np_tree(params))
    xt = flat(x_np)
    t_mean, t_log_var = twin.encode(xt)
    rep.close(name, "encoder mean", mean, t_mean.detach())
    rep.close(name, "encoder log-variance", log_var, t_log_var.detach())
    rep.close(name, "flow prior log p(z)", model.log_prior(params, z),
              twin.log_prior(torch.from_numpy(np.array(z))).detach())
    t_ll, t_kl = twin.terms(xt, torch.from_numpy(eps))
    rep.close(name, "log p(x|z) (decoder)", ll, t_ll.detach())
    rep.close(name, "KL estimate", kl, t_kl.detach())
    rep.close(name, "loss (−ELBO)", loss, -torch.mean(t_ll - t_kl).item())
    with jax.enable_x64(True):
      (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          _f64(params), jnp.asarray(x_np, jnp.float64), jnp.asarray(eps, jnp.float64))
      loss, grads = float(loss), _np_tree(grads, f64)
    twin = new_twin()
    tt.load_flax(twin, _np_tree(params))
    twin.double()
    t_ll, t_kl = twin.terms(xt.double(), torch.from_numpy(eps.astype(f64)))
    t_loss = -torch.mean(t_ll - t_kl)
    rep.close(name, "loss, float64", loss, t_loss.item(), tol=LOSS64_TOL)
    t_loss.backward()
    rep.grads(name, "model", tt.flax_to_torch(twin, grads)["model"], twin.model)

  elif name == "gan_digits":
    from dgmjax.losses import gan as gan_losses
    from dgmjax.nn import gan as gan_nn

    G = gan_nn.DCGANGenerator(shape, config.base_channels)
    D = gan_nn.DCGANDiscriminator(config.base_channels)
    k_g, k_d = jax.random.split(k_init)
    z = np.asarray(jax.random.normal(k_z, (batch_size, config.latent_dim or 64)))
    p_g = _perturbed(G.init(k_g, jnp.asarray(z)), k_pert)
    p_d = _perturbed(D.init(k_d, x), jax.random.fold_in(k_pert, 1))
    mirror = {"gen": p_g, "disc": p_d}

    def d_loss_fn(pd, pg, x, z):  # the trainer's D loss: BCE + R1 on real data
      r1, l_real = gan_losses.r1_penalty(lambda v: D.apply(pd, v), x, gamma=config.r1_weight,
                                         return_logits=True)
      l_fake = D.apply(pd, G.apply(pg, z))
      real_loss, fake_loss = gan_losses.discriminator_loss(l_real, l_fake,
                                                           real_label=config.real_label)
      return jnp.mean(real_loss) + jnp.mean(fake_loss) + jnp.mean(r1)

    g_losses = {"non_saturating": gan_losses.generator_loss_non_saturating,
                "minimax": gan_losses.generator_loss_minimax}
    trained = config.generator_loss
    other = next(k for k in g_losses if k != trained)

    def g_loss_fn(pg, pd, z, loss=trained):
      return jnp.mean(g_losses[loss](D.apply(pd, G.apply(pg, z))))

    both = lambda g, d: {"gen": _np_tree(g, f64), "disc": _np_tree(d, f64)}  # noqa: E731
    twin = new_twin()
    tt.load_flax(twin, both(p_g, p_d))
    zt, xt = torch.from_numpy(z), nchw(x_np)
    rep.close(name, "G(z) (transposed convs, channel LayerNorm)", G.apply(p_g, z),
              to_nhwc(twin.G(zt)))
    rep.close(name, "D(x) (strided convs)", D.apply(p_d, x), twin.D(xt).detach())
    rep.close(name, "D loss (BCE + R1)", d_loss_fn(p_d, p_g, x, z), twin.d_loss(xt, zt)[0].item())
    for loss in (trained, other):
      rep.close(name, f"G loss ({loss})", g_loss_fn(p_g, p_d, z, loss),
                twin.g_loss(zt, loss).item())
    with jax.enable_x64(True):
      args64 = (_f64(p_d), _f64(p_g), jnp.asarray(x_np, jnp.float64), jnp.asarray(z, jnp.float64))
      d_loss, d_grads = jax.value_and_grad(d_loss_fn)(*args64)
      g_grads = {loss: _np_tree(jax.grad(g_loss_fn)(args64[1], args64[0], args64[3], loss), f64)
                 for loss in (trained, other)}
      d_loss, d_grads = float(d_loss), _np_tree(d_grads, f64)
    twin.double()
    zt, xt = zt.double(), xt.double()
    t_d = twin.d_loss(xt, zt)[0]
    rep.close(name, "D loss, float64", d_loss, t_d.item(), tol=LOSS64_TOL)
    t_d.backward()
    rep.grads(name, "D", tt.flax_to_torch(twin, both(p_g, d_grads))["D"], twin.D)
    for loss in (trained, other):  # train.gan's both_grad_norms takes the other one too
      twin.G.zero_grad(set_to_none=True)
      twin.g_loss(zt, loss).backward(inputs=list(twin.G.parameters()))
      rep.grads(name, f"G, {loss} loss", tt.flax_to_torch(twin, both(g_grads[loss], p_d))["G"],
                twin.G)
  else:
    raise ValueError(f"no check for {name!r}")

  # The flax models built here are the trainer's: same parameter shapes as its run.
  trainer = _trainer_param_shapes(name)
  ours = {k: _shapes(v) for k, v in jax.device_get(mirror).items()}
  if name == "gan_digits":
    trainer = {"G": trainer["gen"], "D": trainer["disc"]}
    ours = {"G": ours["gen"], "D": ours["disc"]}
  differ = [f"{player}/{path}: trainer {trainer.get(player, {}).get(path)}, here "
            f"{ours.get(player, {}).get(path)}"
            for player in sorted(set(trainer) | set(ours))
            for path in sorted(set(trainer.get(player, {})) | set(ours.get(player, {})))
            if trainer.get(player, {}).get(path) != ours.get(player, {}).get(path)]
  rep.equal(name, "flax model = the trainer's (parameter shapes)", not differ,
            f"{len(differ)} differ, e.g. {'; '.join(differ[:2])}" if differ else "")
  counts_t = {k: sum(math.prod(s) for s in v.values()) for k, v in trainer.items()}
  counts_twin = twin.num_params()
  rep.equal(name, "parameter count", counts_t == counts_twin,
            f"trainer {_fmt_params(counts_t)}, PyTorch {_fmt_params(counts_twin)}")


def run_check(args) -> int:
  rep = _Report()
  for name in args.only:
    t0 = time.perf_counter()
    try:
      _check_model(name, rep)
    except Exception as e:  # noqa: BLE001 - one model's failure is a row, not the end
      rep.rows.append((name, f"check raised {type(e).__name__}: {e}", math.inf, 0.0, False))
    print(f"[{name}] checked in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
  lines = ["| model | what | max error | tolerance | ok |", "|---|---|---|---|---|"]
  for model, what, err, tol, ok in rep.rows:
    lines.append(f"| {model} | {what} | {err:.2e} | {tol:.0e} | {'yes' if ok else '**NO**'} |")
  bad = [r for r in rep.rows if not r[4]]
  lines += ["", f"{len(rep.rows) - len(bad)} of {len(rep.rows)} checks passed. Errors are "
            "max |flax − torch| / max(1, max |flax|); gradients ‖torch − flax‖ / ‖flax‖ for "
            "each parameter tensor (the worst one is shown)."]
  text = "\n".join(lines)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")
  return 1 if bad else 0


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--only", nargs="+", choices=list(TASKS), default=list(TASKS),
                  metavar="NAME", help=f"a subset of {list(TASKS)}")
  ap.add_argument("--steps", type=int, default=0,
                  help="steps per round for every model (default: per model, "
                  + ", ".join(f"{k} {v[2]}" for k, v in TASKS.items()) + ")")
  ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per model")
  ap.add_argument("--warmup", type=int, default=5, help="PyTorch warm-up steps (once)")
  ap.add_argument("--compile", action="store_true",
                  help="add a torch.compile column for " + ", ".join(COMPILE_TASKS))
  ap.add_argument("--smoke", action="store_true",
                  help="2 rounds of 2 steps, 1 warm-up step: checks that it runs, no figures")
  ap.add_argument("--check", action="store_true",
                  help="compare the twins with the flax models (same parameters) and exit")
  ap.add_argument("--out", default="", help="also write the Markdown table to this file")
  ap.add_argument("--threads", type=int, default=_threads(),
                  help="PyTorch threads (default: the cores this process may use)")
  ap.add_argument("--worker", nargs=2, metavar=("ROLE", "NAME"), help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.worker:
    role, name = args.worker
    if role not in ("ours", "theirs", "compiled") or name not in TASKS:
      ap.error(f"--worker: unknown role or model {args.worker}")
    return worker_main(role, name, args)
  if args.check:
    return run_check(args)
  if args.smoke:
    args.steps, args.rounds, args.warmup = 2, 2, 1
  for key in ("rounds", "warmup", "threads"):
    if getattr(args, key) < 1:
      ap.error(f"--{key} must be >= 1")
  if args.steps < 0:
    ap.error("--steps must be >= 1 (or 0 for the per-model defaults)")
  args.argv = argv
  load_start = _load1()
  results = []
  for name in args.only:
    t0 = time.perf_counter()
    results.append(measure(name, args))
    print(f"[{name}] done in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
  text, ok = render(results, args, load_start, _load1())
  print(text)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      f.write(text + "\n")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
