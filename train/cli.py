"""The command line of every trainer: ``python -m train.<name> [--workdir=DIR] [--config.key=value ...]``.

Bad input is one line on stderr starting ``error:`` and exit code 1, never
a traceback: an unknown key, a value of the wrong type, a value the run
cannot use, an unusable workdir. Ctrl-C is one line too, whenever it comes.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable

import ml_collections

from dgmjax.errors import ConfigError, UserError

EXIT_BAD_INPUT = 1


def _error(text: str) -> None:
  print(f"error: {text}", file=sys.stderr, flush=True)
  sys.exit(EXIT_BAD_INPUT)


def reject_unknown_keys(config: ml_collections.ConfigDict, argv: list[str]) -> None:
  """ml_collections reports an unknown override with a traceback; we say one line."""
  import difflib

  for arg in argv:
    if not arg.startswith("--config."):
      continue
    key = arg[len("--config."):].split("=", 1)[0]
    node, path = config, []
    for part in key.split("."):
      path.append(part)
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        near = difflib.get_close_matches(part, keys, n=1)
        hint = f" (did you mean config.{'.'.join(path[:-1] + near)}?)" if near else ""
        _error(f"unknown config key config.{'.'.join(path)}{hint}")
      node = node[part]


def _is_int(value, lo: int) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= lo


def validate_run(config: ml_collections.ConfigDict, num_train: int) -> None:
  """Values that only fail later (deep in NumPy or JAX): one ConfigError now.

  Called once the data is loaded, since some limits depend on it.
  """
  # seed and learning_rate are checked with the other base keys
  # (harness.validate_config); only the data-dependent limits are here.
  bs = config.get("batch_size")
  if _is_int(bs, 1) and bs > num_train:
    limit = config.get("data_limit") or 0
    why = f" (config.data_limit={limit} keeps only {num_train})" if limit else ""
    raise ConfigError(
        f"config.batch_size={bs} is larger than the {num_train} training examples{why}; "
        f"use a batch size <= {num_train}" + (" or a larger data_limit." if limit else "."))


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser with our one-line error instead of ``FATAL Flags parsing error``."""
  from absl import flags

  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    text = str(e)
    if text.startswith("flag --config."):
      key = text[len("flag --"):].split("=", 1)[0]
      try:
        default = flags.FLAGS["config"].value
        for part in key.split(".")[1:]:
          default = default[part]
        kind = type(default).__name__
        article = "an" if kind[:1] in "aeiou" else "a"
        text += f" (expected {article} {kind}, e.g. {default!r})"
      except (KeyError, AttributeError, TypeError):
        pass
    _error(text)
  return []


def _interrupted_line(workdir: str) -> str:
  from train import checkpoints

  directory = os.path.join(workdir, "checkpoints")
  steps = checkpoints.complete_steps(directory)
  last = checkpoints.describe_last_good(directory, steps[0] if steps else None)
  return f"interrupted: {last}; rerun the same command to resume."


def guarded(fn: Callable[[], object], workdir: str) -> int:
  """Run ``fn``; turn our errors and Ctrl-C into one line and an exit code."""
  from train import harness

  try:
    fn()
  except UserError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT
  except harness.Interrupted as e:
    print(f"interrupted at step {e.step}: checkpoint saved in {workdir}; "
          "rerun the same command to resume.", file=sys.stderr, flush=True)
    return 128 + e.signum
  except KeyboardInterrupt:  # during start-up, compilation, or a second Ctrl-C
    print(_interrupted_line(workdir), file=sys.stderr, flush=True)
    return 128 + signal.SIGINT
  return 0


def _drop_orbax_errors(record) -> bool:
  import logging as pylogging

  if record.levelno < pylogging.ERROR:
    return True
  try:
    text = record.getMessage()
  except Exception:  # noqa: BLE001
    text = ""
  # Orbax's own error logs, and asyncio's "Task exception was never
  # retrieved" for its failed write coroutines.
  return "orbax" not in (record.pathname or "") and "orbax" not in text


def run_cli(name: str, get_config: Callable[[], ml_collections.ConfigDict],
            make_task: Callable, **kwargs) -> None:
  """``python -m train.<name> [--workdir=DIR] [--config.key=value ...]``."""
  try:
    from absl import app, flags
    from ml_collections import config_flags

    from train import harness

    reject_unknown_keys(get_config(), sys.argv[1:])
    flags.DEFINE_string("workdir", os.path.join("workdir", name),
                        "Checkpoints, logs and pictures; rerunning resumes from it.")
    config_flags.DEFINE_config_dict("config", get_config(), "Training config.",
                                    lock_config=True)
  except KeyboardInterrupt:
    print("interrupted during start-up; nothing was written.", file=sys.stderr)
    sys.exit(128 + signal.SIGINT)

  def main(argv):
    from absl import logging

    # Orbax logs every save at INFO; keep the terminal for our progress.
    logging.set_verbosity(logging.WARNING)
    # A failed save is reported by us in one line; Orbax would also log its
    # traceback (hundreds of lines) from the background thread.
    logging.get_absl_logger().addFilter(_drop_orbax_errors)
    if len(argv) > 1:
      _error(f"unexpected arguments: {' '.join(argv[1:])} (flags look like --config.key=value)")
    workdir = flags.FLAGS.workdir
    code = guarded(lambda: harness.train_and_evaluate(flags.FLAGS.config, workdir, make_task,
                                                      **kwargs), workdir)
    sys.exit(code)

  try:
    app.run(main, flags_parser=_parse_flags)
  except KeyboardInterrupt:
    print("interrupted during start-up; nothing was written.", file=sys.stderr)
    sys.exit(128 + signal.SIGINT)
