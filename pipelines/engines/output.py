"""Engine worker output goes to a per-run log file, not the user's terminal.

Beam's SDK workers and Spark's JVM write to the process's stderr file descriptor (which
child processes inherit), so a redirect of fd 2 for the duration of the job is the one
place that catches all of it. The log's path is named in errors so nothing is lost.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


@contextlib.contextmanager
def engine_output_to(log_path: Path) -> Iterator[Path]:
    """Send fd 2 (this process and its children) to ``log_path`` while the block runs."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with log_path.open("ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield log_path
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def terminal_stderr() -> TextIO:
    """A text stream on the terminal's stderr that survives ``engine_output_to`` (for progress bars)."""
    return os.fdopen(os.dup(2), "w", buffering=1)
