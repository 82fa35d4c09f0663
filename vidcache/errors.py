"""Errors with the exit code the CLI maps them to.

Fatal errors (configuration, input, locking) stop a command; `VideoFailure` is per video and only
marks that video failed in the catalog while the run goes on.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3


class VidcacheError(Exception):
    """A fatal error whose message is one line a user can act on."""

    exit_code = EXIT_USAGE


class ConfigError(VidcacheError):
    """An option or combination of options that cannot work."""


class ManifestError(VidcacheError):
    """The manifest has one or more bad rows; every problem is listed, nothing was written."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        head = f"manifest {path}: {len(problems)} problem(s); fix the rows below and run again"
        super().__init__("\n".join([head, *("  " + p for p in problems)]))


class MissingWeightsError(VidcacheError):
    """Model weights are not available locally and downloading is off."""


class CacheError(VidcacheError):
    """The cache directory is unusable (wrong config, unreadable, corrupt)."""


class CacheLockedError(VidcacheError):
    exit_code = EXIT_LOCKED


class VideoFailure(Exception):
    """One video cannot be extracted; `reason` is stored in the catalog."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class ViewAbsent(Exception):
    """The video has no stream for a view (e.g. no audio track): recorded as "absent", not failed."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)
