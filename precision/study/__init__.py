"""Studies: grids of independent deterministic cells, run resumably, with provenance and reports.

    from precision.study import Study, run_study, ProcessExecutor
    study = Study(name="soft-target-stall", cells=[...], run_cell=run_cell, summarize=summarize,
                  report=report)
    results = run_study(study, "studies/results/soft-target-stall", executor=ProcessExecutor(jobs=2))

See :mod:`precision.study.engine` (running), :mod:`~precision.study.store` (files and encoding),
:mod:`~precision.study.executors` (where cells run), :mod:`~precision.study.cluster` (on a Dask cluster:
``DaskExecutor(scheduler="tcp://HOST:8786")`` or ``DaskExecutor(workers=4)``),
:mod:`~precision.study.stall` (stall detection on traces) and :mod:`~precision.study.plots` (figures and
tables for reports).
"""

from .engine import Study, StudyResults, grid, load_results, run_study
from .cluster import DaskExecutor  # imports Dask only when one is made
from .executors import FuturesExecutor, ProcessExecutor, SerialExecutor
from .stall import Floor, LossFreeze, first_at_or_below, floor, loss_freeze_iteration
from .store import cell_id

__all__ = ["Study", "StudyResults", "grid", "run_study", "load_results", "cell_id",
           "SerialExecutor", "ProcessExecutor", "FuturesExecutor", "DaskExecutor",
           "LossFreeze", "loss_freeze_iteration", "Floor", "floor", "first_at_or_below"]
