"""The command line (issue 18): bad input and Ctrl-C are one line, never a traceback."""

import os
import signal
import subprocess
import sys
import time

from train import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start(workdir, *flags):
  return subprocess.Popen([sys.executable, "-m", "train.vqvae", f"--workdir={workdir}", *flags],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_value_of_the_wrong_type_is_our_one_line_error(tmp_path):
  p = _start(tmp_path / "w", "--config.batch_size=abc")
  _, err = p.communicate(timeout=300)
  lines = [ln for ln in err.splitlines() if ln.strip()]
  assert p.returncode == 1 and len(lines) == 1, err
  assert lines[0].startswith("error: flag --config.batch_size=abc") and "expected an int" in lines[0]
  assert "FATAL" not in err and not (tmp_path / "w").exists()


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
  work = tmp_path / "w"
  p = _start(work, "--config.num_steps=100000", "--config.quiet=True", "--config.data_limit=256",
             "--config.batch_size=32")
  deadline = time.time() + 240
  while time.time() < deadline and not (work / ".lock").exists():  # inside the harness now
    time.sleep(0.02)
  p.send_signal(signal.SIGINT)
  out, err = p.communicate(timeout=300)
  assert p.returncode == 128 + signal.SIGINT, err[-2000:]
  assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
  assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err[-2000:]
  assert "interrupted" in err


def test_a_second_ctrl_c_names_the_last_complete_checkpoint(tmp_path, capsys):
  (tmp_path / "checkpoints" / "10").mkdir(parents=True)
  (tmp_path / "checkpoints" / "20.orbax-checkpoint-tmp-5").mkdir()  # the save it cut short

  def final_save():
    raise KeyboardInterrupt

  assert cli.guarded(final_save, str(tmp_path)) == 128 + signal.SIGINT
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "last good checkpoint is step 10" in err
