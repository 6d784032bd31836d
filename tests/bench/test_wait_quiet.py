"""bench/processes.py's wait_quiet: a measurement starts only once the server's tree has gone quiet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vitserve.bench.processes import process_tree, wait_quiet

# Spins (a busy child of a busy parent, so the tree is what is measured) while the flag file exists.
SPIN = """
import os, subprocess, sys, time
flag = sys.argv[1]
if len(sys.argv) == 2:
    child = subprocess.Popen([sys.executable, __file__, flag, "child"])
    child.wait()
else:
    print("spinning", flush=True)
    while os.path.exists(flag):
        pass
    time.sleep(3600)
"""


def test_wait_quiet_waits_out_a_busy_tree_and_returns_once_it_rests(tmp_path: Path) -> None:
    script, flag = tmp_path / "spin.py", tmp_path / "busy"
    script.write_text(SPIN)
    flag.touch()
    proc = subprocess.Popen([sys.executable, str(script), str(flag)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "spinning\n"
        # A spinning child uses a whole core, far above 0.05 of one, however loaded the machine.
        assert wait_quiet(proc.pid, cores=0.05, window_s=0.2, timeout_s=1.0) >= 1.0
        flag.unlink()
        assert wait_quiet(proc.pid, cores=0.05, window_s=0.2, timeout_s=60.0) < 60.0
    finally:
        for member in reversed(process_tree(proc.pid)):
            member.kill()
        proc.wait()
