"""The load tester's errors: each carries the exit code the CLI returns for it."""

from __future__ import annotations

# Exit codes: 0 every SLO holds, 1 an SLO broke (or the run failed), 2 bad usage or input,
# 3 the run is invalid because the generator fell behind its own schedule.
EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_USAGE = 2
EXIT_INVALID = 3


class LoadtestError(Exception):
    """An error reported as one line; ``exit_code`` is what the CLI returns."""

    exit_code = EXIT_BROKEN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(LoadtestError):
    """A bad flag, SLO expression or input file."""

    exit_code = EXIT_USAGE


class ServiceError(LoadtestError):
    """The service under test could not be started or reached (suite mode)."""

    exit_code = EXIT_BROKEN
