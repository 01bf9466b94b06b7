"""Metrics with stable names, written to TensorBoard and to a CSV file side by side."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Append ``{name: value}`` rows at a step to ``<run_dir>/metrics.csv`` and TensorBoard.

    The CSV is long-format (``step, name, value``) so new metric names never rewrite old rows, and it
    is flushed after every call, so a killed run keeps everything logged so far.
    """

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = run_dir / "metrics.csv"
        is_new = not self.csv_path.exists()
        self._file = self.csv_path.open("a", newline="")
        self._csv = csv.writer(self._file)
        if is_new:
            self._csv.writerow(["step", "name", "value"])
        self._tensorboard: Any = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record each metric at ``step``."""
        for name, value in metrics.items():
            self._csv.writerow([step, name, float(value)])
            self._tensorboard.add_scalar(name, float(value), step)
        self._file.flush()
        self._tensorboard.flush()

    def close(self) -> None:
        """Flush and close both sinks."""
        self._file.close()
        self._tensorboard.close()


def read_metrics(csv_path: Path) -> dict[str, dict[int, float]]:
    """A `MetricsLogger` CSV -> metric name -> step -> value.

    A step logged more than once (a resumed run repeats the steps after its last checkpoint) keeps its
    last value.
    """
    values: dict[str, dict[int, float]] = defaultdict(dict)
    with csv_path.open() as file:
        for row in csv.DictReader(file):
            values[row["name"]][int(row["step"])] = float(row["value"])
    return dict(values)
