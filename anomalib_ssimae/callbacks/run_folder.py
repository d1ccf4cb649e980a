"""Which run folder a run writes into, and what a failed training leaves behind (:class:`RunFolder`).

anomalib 2.7's ``Engine`` picks the folder (``Engine._setup_workspace``) from ``default_root_dir``, the model's name
and the datamodule's name and category, ``<root>/<model>/<dataset>/<category>``, before Lightning runs anything:

- ``train`` and ``fit`` create ``v<N>`` (one above the highest) and point the ``latest`` symlink at it
  (``anomalib.utils.path.create_versioned_dir``), so a command that then fails on a bad ``data.root`` or a refused
  config left an empty ``v<N>/`` with ``latest`` pointing at it;
- ``test``, ``validate`` and ``predict`` write into the folder ``latest`` points at, whichever checkpoint they are
  given: ``anomalib test --ckpt_path .../v0/weights/lightning/model.ckpt`` wrote its pictures into ``v1/``.

Lightning's trainer then writes everything without a path of its own into ``trainer.default_root_dir``: the result
pictures, and ``config.yaml`` of anomalib's CLI when no logger is configured. anomalib offers no hook into
``_setup_workspace``; this callback (added by the model's ``configure_callbacks``) corrects the outcome from
Lightning's hooks instead of patching anomalib.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only

from anomalib_ssimae.records import write_text_atomic

logger = logging.getLogger(__name__)

VERSION = re.compile(r"^v(\d+)$")  # anomalib's run folders: v0, v1, ...
FAILED = "FAILED.txt"  # written into a failed training's run folder that holds files (a checkpoint, logs)
NOT_RESULTS = {"config.yaml"}  # files a run writes before it does anything (anomalib's CLI, without a logger)


def run_folder_of_checkpoint(checkpoint: str | Path) -> Path:
    """The run folder a checkpoint belongs to: ``<run>`` for anomalib's ``<run>/weights/lightning/<name>.ckpt``
    (symlinks such as ``latest`` resolved), else the folder holding the checkpoint."""
    path = Path(checkpoint).resolve()
    if path.parent.name == "lightning" and path.parent.parent.name == "weights":
        return path.parent.parent.parent
    return path.parent


def holds_results(folder: Path) -> bool:
    """Whether ``folder`` holds any file besides :data:`NOT_RESULTS` (at its top), in any sub-folder."""
    return any(
        not path.is_dir() and path.relative_to(folder).as_posix() not in NOT_RESULTS for path in folder.rglob("*")
    )


def version(folder: Path) -> int | None:
    """``N`` of an anomalib run folder ``v<N>``; ``None`` for any other name."""
    match = VERSION.match(folder.name)
    return int(match.group(1)) if match else None


def latest_points_at(folder: Path) -> bool:
    """Whether ``<folder's parent>/latest`` is a symlink to ``folder`` (anomalib made ``folder`` its newest run)."""
    latest = folder.parent / "latest"
    return latest.is_symlink() and latest.resolve() == folder.resolve()


def previous_good_run(run: Path) -> Path | None:
    """The newest sibling run folder ``v<K>`` (``K`` below ``run``'s) that holds a checkpoint (``*.ckpt``) and is not
    marked :data:`FAILED`; ``None`` if there is none."""
    number = version(run)
    candidates = [
        folder
        for folder in run.parent.iterdir()
        if folder.is_dir()
        and not folder.is_symlink()
        and (k := version(folder)) is not None
        and (number is None or k < number)
        and not (folder / FAILED).exists()
        and any(folder.rglob("*.ckpt"))
    ]
    return max(candidates, key=version, default=None)


def point_latest(workspace: Path, target: Path | None) -> None:
    """Point ``<workspace>/latest`` at ``target`` (absolute, as anomalib does) by an atomic rename of a new symlink;
    ``None`` removes it."""
    latest = workspace / "latest"
    if target is None:
        latest.unlink(missing_ok=True)
        return
    temporary = workspace / f".latest.{os.getpid()}.partial"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target.resolve(), target_is_directory=True)
    temporary.replace(latest)


class RunFolder(Callback):
    """Keep each run's outputs in its own run folder, and leave nothing misleading after a failed training.

    - ``test`` of a checkpoint writes into the run folder of that checkpoint (:func:`run_folder_of_checkpoint`:
      ``<run>`` for ``<run>/weights/lightning/model.ckpt``, else the checkpoint's own folder), never into the newer
      run that ``latest`` points at. A test of weights this trainer just trained (``anomalib train``, resumed or
      not) stays in the training's folder, and a test without a checkpoint where anomalib put it. The trainer's
      ``default_root_dir`` is switched for the test and restored after it.
    - A training (``fit`` stage) that fails, by an exception, SIGTERM or Ctrl+C: when its folder is an anomalib run
      folder ``v<N>`` that ``latest`` points at, it is removed if it holds no file but ``config.yaml`` (the failure
      came before anything was written), else kept (checkpoints, logs: no work is lost) with :data:`FAILED` naming
      the error. ``latest`` then points at the previous good run (:func:`previous_good_run`), or is removed when
      there is none. A folder that already held results when training began is never touched.

    What it cannot reach: a failure in anomalib's ``Engine`` before Lightning's trainer runs (e.g. an invalid
    trainer argument, in ``Trainer.__init__``), and a process killed outright (SIGKILL, out of memory).
    """

    def __init__(self) -> None:
        self._redirected_from: str | None = None  # the trainer's default_root_dir before a test was redirected
        self._fresh: Path | None = None  # the run folder of this training, when it held no results at its start

    # ------------------------------------------------------------------ test: the tested run's folder
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Switch the trainer's ``default_root_dir`` to the tested checkpoint's run folder (see the class
        docstring); runs after the checkpoint is loaded, before any picture is written."""
        current = Path(trainer.default_root_dir)
        if not trainer.ckpt_path or not Path(trainer.ckpt_path).is_file():
            return  # the weights in memory (`train`, or a model passed in): anomalib's folder
        if getattr(pl_module, "_tested_checkpoint", None):
            return  # a resumed `train`: the model tests the weights it trained, not the resumed-from checkpoint's
        run = run_folder_of_checkpoint(trainer.ckpt_path)
        if run == current.resolve():
            return
        self._redirected_from = trainer.default_root_dir
        # Lightning's Trainer has no setter for default_root_dir; its property returns this attribute (set in
        # Trainer.__init__). Switched for this test only and restored in teardown/on_exception.
        trainer._default_root_dir = str(run)
        logger.info(
            "testing %s: outputs go to its run folder %s, not to %s (where anomalib's Engine put the test)",
            trainer.ckpt_path,
            run,
            current,
        )

    def _restore(self, trainer: Trainer) -> None:
        if self._redirected_from is not None:
            trainer._default_root_dir = self._redirected_from
            self._redirected_from = None

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Give the trainer back the ``default_root_dir`` it had before a redirected test."""
        del pl_module, stage
        self._restore(trainer)

    # ------------------------------------------------------------------ failed training
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Note whether the training's run folder is new (holds no results yet)."""
        del pl_module
        run = Path(trainer.default_root_dir)
        fresh = stage == TrainerFn.FITTING and version(run) is not None and run.is_dir() and not holds_results(run)
        self._fresh = run if fresh else None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Undo a redirected test; after a failed training, remove or mark its run folder and move ``latest`` back
        (see the class docstring)."""
        del pl_module
        self._restore(trainer)
        if trainer.state.fn == TrainerFn.FITTING:
            try:
                self._abandon(Path(trainer.default_root_dir), exception)
            except OSError as error:  # never hide the run's own error behind one of the clean-up
                logger.warning(
                    "could not clean up after the failed training in %s: %s", trainer.default_root_dir, error
                )

    @rank_zero_only
    def _abandon(self, run: Path, exception: BaseException) -> None:
        if version(run) is None or not run.is_dir() or not latest_points_at(run):
            return  # not a run folder anomalib made for this training: not ours to change
        if not holds_results(run):
            shutil.rmtree(run)
            what = f"removed its empty run folder {run}"
        elif self._fresh is not None and self._fresh.resolve() == run.resolve():
            write_text_atomic(
                run / FAILED,
                f"This training failed and did not finish: {type(exception).__name__}: {exception}\n"
                "Its checkpoint, if any, is the last one written before the failure.\n",
            )
            what = f"kept its run folder {run} (marked {FAILED})"
        else:
            return
        previous = previous_good_run(run)
        point_latest(run.parent, previous)
        where = f"`latest` points at {previous} again" if previous else "`latest` removed (no earlier good run)"
        logger.warning("training failed (%s: %s): %s; %s", type(exception).__name__, exception, what, where)
