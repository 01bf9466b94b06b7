"""Evaluation on the ``eval`` initial states: per-task success, MP4 videos, a PNG plot and a report."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.core import OBS_IMAGE_PREFIX, BatchedEnv
from vla_rl.data.episodes import ActFn, Episode, run_episodes
from vla_rl.io import write_bytes_atomic, write_json_atomic, write_text_atomic
from vla_rl.metrics import read_metrics


@dataclass
class EvalResult:
    """Success per task over the evaluated episodes."""

    success_by_task: dict[str, float]
    episodes_by_task: dict[str, int]
    mean_length: float

    @property
    def mean_success(self) -> float:
        """Success rate averaged over tasks."""
        return float(np.mean(list(self.success_by_task.values())))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EvalResult:
        """Inverse of `as_dict`."""
        return cls(
            {str(k): float(v) for k, v in values["success_by_task"].items()},
            {str(k): int(v) for k, v in values["episodes_by_task"].items()},
            float(values["mean_length"]),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "mean_success": self.mean_success,
            "success_by_task": self.success_by_task,
            "episodes_by_task": self.episodes_by_task,
            "mean_length": self.mean_length,
        }


def evaluate(
    env: BatchedEnv,
    act: ActFn,
    tasks: Sequence[str],
    episodes_per_task: int,
    num_videos: int = 0,
    video_dir: Path | None = None,
    on_reset: Callable[[], None] | None = None,
    progress: str | None = "eval",
) -> EvalResult:
    """Run ``episodes_per_task`` episodes per task from the first eval initial states.

    The first ``ceil(num_videos / len(tasks))`` episodes of each task (at most ``num_videos`` in all) are
    written as MP4 files to ``video_dir`` (all cameras side by side).
    """
    per_task_videos = -(-num_videos // max(len(tasks), 1)) if num_videos else 0
    video_jobs = {(task, k) for task in tasks for k in range(per_task_videos)}
    video_jobs = set(sorted(video_jobs, key=lambda job: (job[1], list(tasks).index(job[0])))[:num_videos])
    jobs = [(task, k) for task in tasks for k in range(episodes_per_task)]
    episodes = run_episodes(
        env,
        jobs,
        "eval",
        act,
        record=lambda task, k: (task, k) in video_jobs,
        progress=progress,
        on_reset=on_reset,
    )
    if video_dir is not None:
        for episode in episodes:
            if (episode.task, episode.init_state_id) in video_jobs:
                outcome = "success" if episode.success else "failure"
                write_video(
                    video_dir / f"{episode.task}_{episode.init_state_id:02d}_{outcome}.mp4", episode, env
                )
    success = {task: float(np.mean([e.success for e in episodes if e.task == task])) for task in tasks}
    counts = {task: sum(e.task == task for e in episodes) for task in tasks}
    return EvalResult(success, counts, float(np.mean([e.length for e in episodes])))


def write_video(path: Path, episode: Episode, env: BatchedEnv) -> None:
    """Write a recorded episode's camera frames (side by side) as an H.264 MP4."""
    import imageio.v3 as iio

    keys = [key for key in episode.observations[0] if key.startswith(OBS_IMAGE_PREFIX)]
    if not keys:
        return
    frames = np.stack([np.concatenate([obs[key] for key in keys], axis=1) for obs in episode.observations])
    buffer = io.BytesIO()
    fps = int(env.metadata.get("render_fps", 20))
    iio.imwrite(buffer, frames, extension=".mp4", fps=fps, codec="libx264", macro_block_size=16)
    write_bytes_atomic(path, buffer.getvalue())


def plot_success(path: Path, results: dict[str, EvalResult]) -> None:
    """Grouped bar chart of per-task success for one or more labelled results, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(next(iter(results.values())).success_by_task)
    width = 0.8 / len(results)
    figure, axis = plt.subplots(figsize=(max(6, 1.1 * len(tasks)), 3.8))
    for index, (label, result) in enumerate(results.items()):
        positions = np.arange(len(tasks)) + index * width
        axis.bar(positions, [100 * result.success_by_task[t] for t in tasks], width, label=label)
    axis.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks, rotation=30, ha="right")
    axis.set_ylabel("success on eval states (%)")
    axis.set_ylim(0, 105)
    axis.legend(loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())


def write_report(
    run_dir: Path, title: str, results: dict[str, EvalResult], notes: Sequence[str] = ()
) -> None:
    """Write ``report.md`` and ``report.json`` with per-task success for each labelled result."""
    labels = list(results)
    tasks = list(results[labels[0]].success_by_task)
    lines = [
        f"# {title}",
        "",
        *notes,
        "",
        "| task | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for task in tasks:
        cells = [f"{100 * results[label].success_by_task[task]:.0f}%" for label in labels]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines.append(
        "| **mean** | " + " | ".join(f"**{100 * results[lb].mean_success:.1f}%**" for lb in labels) + " |"
    )
    write_text_atomic(run_dir / "report.md", "\n".join(lines) + "\n")
    write_json_atomic(
        run_dir / "report.json", {"title": title, "results": {k: v.as_dict() for k, v in results.items()}}
    )


def plot_metric(path: Path, metrics_csv: Path, name: str, x_label: str) -> None:
    """Line plot of one metric from a `MetricsLogger` CSV (nothing is written if it was never logged).

    A step logged more than once is drawn at its last value (`read_metrics`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = read_metrics(metrics_csv).get(name)
    if not points:
        return
    steps, values = zip(*sorted(points.items()), strict=True)
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(steps, [100 * v for v in values], marker="o")
    axis.set_xlabel(x_label)
    axis.set_ylabel(f"{name} (%)")
    axis.set_ylim(0, 105)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())
