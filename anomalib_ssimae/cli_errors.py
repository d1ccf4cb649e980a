"""Short errors in the ``anomalib`` CLI for the mistakes this package detects.

anomalib's CLI installs Rich's traceback handler, so a bad file, a bad setting or a mismatched checkpoint that the
package names in one sentence (the file, what is wrong, what to do) arrived at the end of 85-268 lines of
traceback. :func:`install`, called when the CLI imports the package's models and datamodules, prints such an error
in two lines instead (``error: <message>`` and how to see the traceback) and exits with status 1. Any other error,
from anomalib, Lightning, torch or a bug of this package outside those kinds, keeps its full traceback, as does every
error when :data:`DEBUG` is set in the environment.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import TracebackType

PACKAGE = Path(__file__).resolve().parent
DEBUG = "ANOMALIB_SSIMAE_TRACEBACK"  # set (to anything) for the full traceback
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)


def raised_here(traceback: TracebackType | None) -> bool:
    """Whether the innermost frame of ``traceback`` (where the error was raised) is in this package."""
    frame = None
    while traceback is not None:
        frame, traceback = traceback.tb_frame, traceback.tb_next
    return frame is not None and Path(frame.f_code.co_filename).resolve().is_relative_to(PACKAGE)


def is_user_error(kind: type[BaseException], traceback: TracebackType | None) -> bool:
    """An error this package raised about the user's input: one of :data:`USER_ERRORS` raised in its code, or an
    error class of its own (e.g. ``QuantizationRefused``)."""
    own = kind.__module__.startswith(PACKAGE.name + ".") and issubclass(kind, Exception)
    return own or (issubclass(kind, USER_ERRORS) and raised_here(traceback))


def install() -> None:
    """Wrap ``sys.excepthook`` of an ``anomalib`` command (once; nowhere else) to print user errors short."""
    previous = sys.excepthook
    if Path(sys.argv[0]).name != "anomalib" or getattr(previous, "anomalib_ssimae", False):
        return

    def hook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        if os.environ.get(DEBUG) or not is_user_error(kind, traceback):
            previous(kind, error, traceback)
            return
        sys.stderr.write(f"error: {error}\n(the full traceback: run the command again with {DEBUG}=1)\n")

    hook.anomalib_ssimae = True  # type: ignore[attr-defined]
    sys.excepthook = hook
