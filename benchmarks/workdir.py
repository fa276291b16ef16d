"""Temporary work directories of a benchmark run: removed when the run succeeds, kept (and
named on stderr) when it fails, for a look at its logs and data.

A run on the handbook leaves hundreds of MB in its work directory (online: 505 MB), so runs
without --work must not pile them up in /tmp. A directory given with --work is the caller's
and is never removed: its caches (the offline store, the enriched events) serve the next run.

    work = Path(args.work or workdir.temporary("ffs-bench-"))
    ...
    if __name__ == "__main__":
        sys.exit(workdir.run(main))
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["run", "temporary"]

_made: list[Path] = []


def temporary(prefix: str) -> str:
    """A new directory under the system's temporary one, removed by run() on success."""
    path = tempfile.mkdtemp(prefix=prefix)
    _made.append(Path(path))
    return path


def run(main: Callable[[], int | None]) -> int | None:
    """main(), then the temporary directories it made: removed if it returned 0 (or None),
    kept and named otherwise, and on an exception (which goes on)."""
    try:
        code = main()
    except BaseException as exc:
        _keep(f"the run stopped ({type(exc).__name__})")
        raise
    if code:
        _keep(f"the run failed (exit {code})")
    else:
        while _made:
            shutil.rmtree(_made.pop(), ignore_errors=True)
    return code


def _keep(why: str) -> None:
    for path in _made:
        if path.exists():
            print(f"{why}: its work directory is kept at {path}", file=sys.stderr)
    _made.clear()
