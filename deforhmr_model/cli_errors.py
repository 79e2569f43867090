"""How every ``deforhmr`` command reports errors: one line on stderr and an exit status.

Every command handler (``infer``, ``convert-*``, ``train ...``, ``eval``) is wrapped by
:func:`guard` when its parser is built, so errors are turned into messages in one place:

* :class:`UsageError` (a bad flag value, an unusable output folder): exit status 2;
* a problem with a file or value the user gave (:func:`user_error_types`: missing model
  file, unreadable checkpoint/body/regressor/dataset, bad device, ValueError, missing file):
  exit status ``file_error_status`` (1 for ``train``/``eval``, whose inputs are data; 2
  for ``infer`` and the converters, whose inputs are command-line arguments);
* Ctrl-C: "interrupted", exit status 130.

Never a traceback for these; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable


class UsageError(Exception):
    """Bad command-line input that stops the whole run (exit status 2)."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """The error types that mean "a file or value the user gave is unusable" (imported lazily so
    that building the parser stays cheap)."""
    from deforhmr_model.body.joints import RegressorFileError
    from deforhmr_model.body.smpl_io import SMPLFileError
    from deforhmr_model.datasets.readers import DatasetFileError
    from deforhmr_model.device import DeviceError
    from deforhmr_model.files.weights import MissingModelFileError
    from deforhmr_model.network.checkpoint import CheckpointError
    return (DatasetFileError, MissingModelFileError, CheckpointError, RegressorFileError, SMPLFileError,
            DeviceError, FileNotFoundError, ValueError)


def guard(fn: Callable[..., int], prog: str = "deforhmr", file_error_status: int = 1) -> Callable[..., int]:
    """Wrap a command handler: errors become one line ``<prog>: error: ...`` on stderr and an
    exit status (see the module docstring). ``prog``: "deforhmr" for the top-level commands,
    "deforhmr train" / "deforhmr eval" for those command groups."""
    def run(args) -> int:
        try:
            return fn(args)
        except UsageError as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        except user_error_types() as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return file_error_status
    run.__wrapped__ = fn
    return run
