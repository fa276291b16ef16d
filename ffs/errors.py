"""One error hierarchy for the project.

`TransientError` is worth retrying (a service down, a timeout); `TerminalError` is not
(bad input, bad config): fix the cause and run again. Messages say what was expected, what
was found and what to do.
"""

from __future__ import annotations


class FFSError(Exception):
    """Base of every error this project raises on purpose."""


class TerminalError(FFSError):
    """Retrying will not help: the input or the configuration must change."""


class TransientError(FFSError):
    """A dependency failed for now; the same call may succeed later."""


class InputError(TerminalError):
    """Input data has the wrong shape (missing columns, unreadable file)."""


class ConfigError(TerminalError):
    """The configuration is missing a value or has one of the wrong kind."""


class ValidationFailed(TerminalError):
    """A fail-severity check failed, so the batch was not published."""

    def __init__(self, what: str, failures: list[str]):
        self.failures = failures
        listing = "\n".join(f"  - {f}" for f in failures)
        super().__init__(f"{what}: {len(failures)} fail-severity check(s) failed; "
                         f"nothing was published.\n{listing}")


class MissingDependency(TerminalError):
    def __init__(self, package: str, purpose: str):
        super().__init__(f"{purpose} needs the Python package '{package}'. "
                         f"Install the project with `make setup` (or `pip install -e .`).")
