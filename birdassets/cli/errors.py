"""User errors on the command line: one line on stderr and exit status 2; bugs keep their traceback.

A command raises :class:`UserError` for a problem it finds itself (a folder that is not there, BirdNET not
installed). The library's own error types for bad input (:data:`LIBRARY_USER_ERRORS`: an unknown task,
preset or checkpoint, an unreadable audio file, an invalid ``birdassets.toml``, SQL the database refuses, ...)
mean the same and are reported the same way by :func:`run_command`, the one wrapper around every command::

    $ birdassets train --task nosuch
    birdassets train: unknown data set 'nosuch'; configured: ['demo-clear', 'demo-noisy', 'demo-pretrain']
    $ echo $?
    2

Any other exception is a bug and propagates with its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

USER_ERROR_STATUS = 2
"""Exit status of a command stopped by a user error (argparse uses the same for bad flags)."""

LIBRARY_USER_ERRORS = (
    ("birdassets.settings", "SettingsError"),  # birdassets.toml; unknown task
    ("birdassets.frontends.presets", "PresetError"),  # unknown or invalid preset; presets file
    ("birdassets.checkpoints", "CheckpointError"),  # unknown or unreadable checkpoint
    ("birdassets.audio.io", "AudioError"),  # missing or unreadable audio file
    ("birdassets.sources.manifest", "ManifestError"),  # recordings folder; label tables
    ("birdassets.store", "StoreError"),  # metrics database missing or locked; SQL refused
    ("birdassets.train.config", "TrainConfigError"),  # training config file and flags
    ("birdassets.models.birdnet", "BirdNetError"),  # BirdNET not installed
    ("birdassets.supervised.fold_data", "SupervisedDataError"),  # folds out of step; a fold smaller than one batch
    ("birdassets.supervised.submission", "SubmissionError"),  # a model folder that cannot make a submission
    ("birdassets.supervised.cross_validation", "NonFiniteLossError"),  # training diverged: lower the learning rate
    ("birdassets.models.tidhy.fitting", "DivergedError"),  # TiDHy training diverged: lower the learning rates
    ("birdassets.defs.profiles", "ProfileError"),  # unknown instance profile; PostgreSQL unset or unreachable
)
"""``(module, class)`` of each library exception that means "the input is wrong", never "the code is wrong"."""


class UserError(Exception):
    """A problem with what the user asked for (a name, a file, a setting); the message names it."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """:class:`UserError` and each class of :data:`LIBRARY_USER_ERRORS` whose module is loaded.

    An exception class whose module was never imported cannot have been raised, so nothing is imported here
    (importing the checkpoint code alone takes seconds).
    """
    loaded = [getattr(sys.modules[module], name) for module, name in LIBRARY_USER_ERRORS if module in sys.modules]
    return (UserError, *loaded)


def one_line(error: BaseException) -> str:
    """The error's message as one line: its lines joined, lines without a letter or digit (a ``^``) dropped."""
    lines = (line.strip() for line in str(error).splitlines())
    return " ".join(line for line in lines if any(c.isalnum() for c in line)) or type(error).__name__


def run_command(command: str, run: Callable[[], int | None]) -> int:
    """``run()``'s exit status; a user error becomes ``birdassets <command>: <message>`` on stderr and status 2."""
    try:
        return int(run() or 0)
    except Exception as error:
        if not isinstance(error, user_error_types()):
            raise  # a bug: keep the traceback
        print(f"birdassets {command}: {one_line(error)}", file=sys.stderr)
        return USER_ERROR_STATUS
