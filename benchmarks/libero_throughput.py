"""LIBERO env throughput: LIBERO's own ``SubprocVectorEnv`` against our process-parallel workers, in one run.

Every configuration runs the same work: N environments of one libero_spatial task, both cameras
(``agentview`` and the wrist camera) at P px, random actions, and OpenVLA's episode loop (every 220
steps: reset, set an eval initial state, 10 no-op steps; these steps are not counted, their time is).

- ``libero``: LIBERO's ``SubprocVectorEnv`` of N ``OffScreenRenderEnv`` (one process per env), with
  robosuite rendering the cameras at P px as LIBERO does (multisampling, reflections); the parent then
  rotates the frames 180 degrees and builds the 8-D state, as an evaluation loop must.
- ``ours``: `sim.libero.env.LiberoSpatialEnv` (`sim.vector.ProcessVectorEnv`: N workers, shared memory)
  with ``fast_render=True`` (multisampling and reflections off) and ``render_size = image_size = P``.
- ``ours-standard``: the same with ``fast_render=False``, so the architecture and the render settings can
  be told apart.

For each N in ``--workers`` (2 4) and P in ``--sizes`` (128 256), the three vector envs are built one
after another (each LIBERO environment holds ~2 GB: 12 at once would not fit in 24 GB) and measured
``--repeats`` x ``--seconds``; the best repetition is reported (the median is in the JSON), with the cores
other processes kept busy during it (column ``other``: a ratio measured while another process held a
core is not meaningful). The ratios ours / libero at equal N and P are what matter (target >= 1.5x).

Run: ``python benchmarks/libero_throughput.py`` (about 15 minutes on 2 cores; ``--quick``: N = 1, 64 px,
about a minute). Prints Markdown tables and writes ``benchmarks/results/libero_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import code_version, machine_busy_s, own_cpu_s

os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import numpy as np

from sim.core import AutoresetMode
from sim.libero.env import CAMERAS, LiberoSpatialEnv, robosuite_axis_angle
from sim.libero.suites import MAX_STEPS, NOOP_ACTION, NUM_NOOP_STEPS, bddl_path, load_eval_init_states

SUITE = "libero_spatial"
TASK = "pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate"
EPISODE_STEPS = MAX_STEPS[SUITE]
OUTPUT = Path(__file__).resolve().parent / "results" / "libero_throughput.json"


def make_libero_env(size: int) -> Any:
    """One LIBERO ``OffScreenRenderEnv`` as LIBERO's own evaluation builds it (module level: picklable)."""
    from sim.libero.install import ensure_libero_ready

    ensure_libero_ready()
    from libero.libero.envs import OffScreenRenderEnv

    return OffScreenRenderEnv(
        bddl_file_name=str(bddl_path(SUITE, TASK)),
        camera_heights=size,
        camera_widths=size,
        camera_names=list(CAMERAS.values()),
    )


class LiberoRunner:
    """LIBERO's ``SubprocVectorEnv`` driven through OpenVLA's episode loop."""

    def __init__(self, num_envs: int, size: int) -> None:
        import functools

        from sim.libero.install import ensure_libero_ready

        ensure_libero_ready()
        from libero.libero.envs import SubprocVectorEnv

        self.num_envs = num_envs
        self.env = SubprocVectorEnv([functools.partial(make_libero_env, size) for _ in range(num_envs)])
        self.init_states = load_eval_init_states(SUITE, TASK)
        self.episode = 0
        self.steps = 0
        self.reset()

    def reset(self) -> None:
        self.env.reset()
        ids = (np.arange(self.num_envs) + self.episode * self.num_envs) % len(self.init_states)
        self.env.set_init_state(self.init_states[ids])
        for _ in range(NUM_NOOP_STEPS):
            self.env.step(np.tile(NOOP_ACTION, (self.num_envs, 1)))
        self.episode += 1
        self.steps = 0

    def step(self, actions: np.ndarray) -> None:
        if self.steps >= EPISODE_STEPS:
            self.reset()
        observations, _, _, _ = self.env.step(actions)
        for obs in observations:  # what an evaluation loop does with each observation
            for camera in CAMERAS.values():
                np.ascontiguousarray(obs[f"{camera}_image"][::-1, ::-1])
            np.concatenate(
                [
                    obs["robot0_eef_pos"],
                    robosuite_axis_angle(obs["robot0_eef_quat"]),
                    obs["robot0_gripper_qpos"],
                ]
            )
        self.steps += 1

    def close(self) -> None:
        self.env.close()


class OursRunner:
    """`LiberoSpatialEnv` (same-step autoreset: the protocol's reset + no-op steps every 220 steps)."""

    def __init__(self, num_envs: int, size: int, fast_render: bool) -> None:
        self.num_envs = num_envs
        self.env = LiberoSpatialEnv(
            num_envs=num_envs,
            num_workers=num_envs,
            tasks=[TASK],
            image_size=size,
            render_size=size,
            fast_render=fast_render,
            autoreset_mode=AutoresetMode.SAME_STEP,
        )
        self.env.reset(seed=0, options={"split": "eval"})

    def step(self, actions: np.ndarray) -> None:
        self.env.step(actions)

    def close(self) -> None:
        self.env.close()


@dataclass
class Row:
    """One configuration's measurements."""

    key: str
    runner: str
    num_envs: int
    size: int
    env_steps_per_s: list[float] = field(default_factory=list)
    other_cores: list[float] = field(default_factory=list)
    build_s: float = 0.0

    def best(self) -> tuple[float, float]:
        """The best rate and the other processes' load during it."""
        index = int(np.argmax(self.env_steps_per_s))
        return self.env_steps_per_s[index], self.other_cores[index]


def measure(
    step: Callable[[np.ndarray], None], num_envs: int, seconds: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Step for ``seconds``; return (env steps/s, cores other processes used meanwhile)."""
    machine, own, start = machine_busy_s(), own_cpu_s(), time.perf_counter()
    steps = 0
    while time.perf_counter() - start < seconds:
        actions = rng.uniform(-0.5, 0.5, (num_envs, 7))
        actions[:, 6] = np.sign(actions[:, 6])
        step(actions)
        steps += num_envs
    elapsed = time.perf_counter() - start
    other = max((machine_busy_s() - machine) - (own_cpu_s() - own), 0.0) / elapsed
    return steps / elapsed, other


def main() -> None:
    """Parse arguments, measure every configuration, print the tables and write the JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4], help="N: envs = worker processes")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="camera sizes (px)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of one measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per configuration")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=1, 64 px, libero vs ours only")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    runners = ["libero", "ours", "ours-standard"]
    if args.quick:
        args.workers, args.sizes, args.seconds, args.repeats = [1], [64], 2.0, 1
        runners = ["libero", "ours"]

    rng = np.random.default_rng(0)
    rows: list[Row] = []
    started = time.perf_counter()
    for num_envs in args.workers:
        for size in args.sizes:
            for name in runners:
                row = Row(f"{name}/{num_envs}/{size}", name, num_envs, size)
                begin = time.perf_counter()
                runner: Any
                if name == "libero":
                    runner = LiberoRunner(num_envs, size)
                else:
                    runner = OursRunner(num_envs, size, fast_render=(name == "ours"))
                try:
                    for _ in range(2):  # warm-up (ours builds its LIBERO envs at the first reset)
                        runner.step(np.zeros((num_envs, 7)))
                    row.build_s = time.perf_counter() - begin
                    for _ in range(args.repeats):
                        rate, other = measure(runner.step, num_envs, args.seconds, rng)
                        row.env_steps_per_s.append(rate)
                        row.other_cores.append(other)
                        print(
                            f"  {row.key}: {rate:.2f} env steps/s (other processes {other:.2f} cores)",
                            flush=True,
                        )
                finally:
                    runner.close()
                rows.append(row)

    ratios = []
    for num_envs in args.workers:
        for size in args.sizes:
            by_name = {row.runner: row for row in rows if row.num_envs == num_envs and row.size == size}
            base = by_name["libero"].best()[0]
            for name in runners[1:]:
                value = by_name[name].best()[0] / base
                target = 1.5 if name == "ours" else None
                ratios.append(
                    {
                        "name": f"{name} / libero SubprocVectorEnv, N={num_envs}, {size} px",
                        "value": value,
                        "target": target,
                        "met": None if target is None else bool(value >= target),
                    }
                )

    header = (
        f"Best of {args.repeats} x {args.seconds:g} s, {os.cpu_count()} cores, "
        f"MUJOCO_GL={os.environ['MUJOCO_GL']}, {SUITE} task 0, both cameras, random actions, "
        f"episodes of {EPISODE_STEPS} steps (reset + {NUM_NOOP_STEPS} no-op steps between them, not counted)."
    )
    lines = [
        header,
        "",
        "| Runner | N | px | env steps/s (best) | median | other | build s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        best, other = row.best()
        lines.append(
            f"| {row.runner} | {row.num_envs} | {row.size} | {best:.2f} | "
            f"{statistics.median(row.env_steps_per_s):.2f} | {other:.2f} | {row.build_s:.0f} |"
        )
    lines += ["", "| Ratio | Measured | Target | Met |", "|---|---:|---:|---|"]
    for ratio in ratios:
        target_text = "-" if ratio["target"] is None else f">= {ratio['target']:.1f}x"
        met_text = "-" if ratio["met"] is None else ("yes" if ratio["met"] else "**no**")
        lines.append(f"| {ratio['name']} | {ratio['value']:.2f}x | {target_text} | {met_text} |")
    print("\n".join(lines))

    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "libero_throughput",
        "header": header,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "mujoco_gl": os.environ["MUJOCO_GL"],
        },
        "code": code_version("sim"),
        "settings": {
            "workers": args.workers,
            "sizes": args.sizes,
            "seconds": args.seconds,
            "repeats": args.repeats,
        },
        "results": [
            {
                **asdict(row),
                "best": row.best()[0],
                "median": statistics.median(row.env_steps_per_s),
            }
            for row in rows
        ],
        "ratios": ratios,
        "total_s": time.perf_counter() - started,
    }
    temporary = args.output.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(report, indent=2) + "\n")
    temporary.replace(args.output)


if __name__ == "__main__":
    main()
