"""Progress lines reach a log when they are written, not when the command ends."""

from __future__ import annotations

import os
import select
import subprocess
import sys


def test_a_progress_line_is_in_a_piped_stdout_while_the_command_still_runs():
    # The child writes one line, then waits for its stdin to close: a line still in its buffer
    # would reach the pipe only when the child exits, which it does not do until we let it.
    code = "import sys\nfrom gantune.search.bars import write_line\nwrite_line('refit 1/3 done')\nsys.stdin.read()\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a log's block-buffered stdout
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        readable, _, _ = select.select([proc.stdout], [], [], 60)
        assert readable, "nothing reached the pipe while the command ran"
        assert proc.stdout.readline() == "refit 1/3 done\n"
    finally:
        proc.kill()
        proc.wait()
