"""Great Expectations, imported the one way every part of validation uses.

Two things happen with the import. GX's loggers are turned down. And a host whose `__main__`
has neither a spec nor a file (`python -c ...`, a pytest-xdist worker) survives it: GX imports
`pyspark.sql.connect`, which takes such a main for its own doctest runner and exits the
process with status 0 (pyspark 4.2, `pyspark/sql/connect/__init__.py`). A gate that exits 0
in the middle would read as passed.
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType

# what the main is called for the length of the import only
_STAND_IN = "<ffs: importing great_expectations>"


def load() -> ModuleType:
    """The great_expectations package (imported on the first call)."""
    # GX logs many INFO lines per context and validation, which would flood a CLI that logs
    # at INFO; real problems still reach us as failed results or exceptions.
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    # GX 1.24's Data Docs renderer raises (and logs a traceback) on every failed
    # distinct-values check, whose result has no unexpected_percent; the page still renders.
    logging.getLogger("great_expectations.render").setLevel(logging.CRITICAL)
    # no shortcut through sys.modules: a module another thread is still importing (the
    # background import) is there half-made; the import statement waits for it
    main = sys.modules.get("__main__")
    bare = (main is not None and getattr(main, "__spec__", None) is None
            and not hasattr(main, "__file__") and not hasattr(sys, "ps1"))
    if bare:
        main.__file__ = _STAND_IN  # type: ignore[union-attr]
    try:
        import great_expectations
    finally:
        if bare and getattr(main, "__file__", None) == _STAND_IN:
            del main.__file__  # type: ignore[union-attr]
    return great_expectations
