"""Callbacks the models add to every run (``SsimAe.configure_callbacks``), one a module:

- :class:`RunFolder` (:mod:`.run_folder`): each run's outputs in its own run folder; what a failed training leaves;
- :class:`RunSummary` (:mod:`.run_summary`): where the logs, pictures and checkpoint are;
- :class:`PredictionRecords` (:mod:`.prediction_records`): JSON-lines records of ``anomalib predict``;
- :class:`ValidationMonitor` (:mod:`.validation_monitor`): validation splits that cannot work, TensorBoard pictures;
- :class:`InputChecks` (:mod:`.input_checks`): image checks before fit, test and predict; hidden and unreadable
  files of ``anomalib predict``;
- :class:`TrainingStatistics` (:mod:`.training_statistics`): the frame check and position normalisation fitted on
  the training images;
- :class:`TrainingGuards` (:mod:`.training_guards`): time and step limits, SIGTERM, non-finite loss and collapse
  between optimiser steps; the gradient norm.
"""

from anomalib_ssimae.callbacks.input_checks import InputChecks
from anomalib_ssimae.callbacks.prediction_records import PredictionRecords
from anomalib_ssimae.callbacks.run_folder import RunFolder
from anomalib_ssimae.callbacks.run_summary import RunSummary, say
from anomalib_ssimae.callbacks.training_guards import TrainingGuards
from anomalib_ssimae.callbacks.training_statistics import TrainingStatistics
from anomalib_ssimae.callbacks.validation_monitor import ValidationMonitor

__all__ = [
    "InputChecks",
    "PredictionRecords",
    "RunFolder",
    "RunSummary",
    "TrainingGuards",
    "TrainingStatistics",
    "ValidationMonitor",
    "say",
]
