"""Throughput of the arm suite's batched env against the limits of this machine, in one run.

What is measured (all on the arm scene, `sim/mujoco/arm/assets/scene.xml`):

1. ``raw mj_step``: single-thread `mujoco.mj_step` on one `MjData` of the env-0 model after
   ``ArmBatchedEnv(num_envs=1, cameras=()).reset(seed=0)``, arm held at the home posture, blocks resting
   on the table: the physics limit of one core. Also on one thread per core (an `MjData` each): what
   the machine allows at that moment (on a shared VM, often well under 2x).
2. ``ArmBatchedEnv`` without cameras at N = 16 and 256, random actions, same-step autoreset, with the
   default thread count (one per core) and with ``num_threads=1``: env steps/s and physics steps/s
   (env steps/s x ``SUBSTEPS``).
3. gymnasium's ``SyncVectorEnv`` and ``AsyncVectorEnv`` (spawn, shared memory, same-step autoreset)
   of ``gymnasium.make("vla_rl/ReachTarget-v0", cameras=())`` (`sim.gym`): physics steps/s.
   AsyncVectorEnv runs one process per env: with N = 16 envs and with N = 2 (one worker per core).
4. ``ArmBatchedEnv`` with the ``agentview`` camera at 64 and 128 px (N = 16): frames/s, and a bare
   render loop (`mujoco.Renderer` with BatchedRenderer's settings: no shadows, reflections, skybox or
   multisampling; ``update_scene`` + ``render`` of a fixed state, no physics) in this process and in two
   spawned processes at once ("both cores").
5. ``ArmBatchedEnv`` in ``Disabled`` autoreset with the camera at 64 px (N = 16), as GRPO rollouts and
   evaluations use it, with none and with half of its envs finished: env steps/s of the running envs.
   Finished envs are neither simulated nor rendered again, so the ratio should be near 1 (it would be
   0.5 if they cost what running ones do).

Every measurement runs ``--seconds`` (0.5) after a short warm-up, ``--repeats`` (10) times. The
repetitions are interleaved (a round runs every measurement once, and the single-thread limit every 4th
slot, about 12 s a round) so that load from other processes and from the host hits all of them alike,
and the best repetition is reported (the median is in the JSON too). The ratios at the end are what
matter: on a shared 2-core VM a single thread's rate swings 1.5x within seconds with the guest idle.
On Linux each repetition also records how many cores other processes kept busy meanwhile (column
``other``); the best is taken among the repetitions with other processes under 0.2 cores when there
are any, since a ratio measured while another process holds a core is not meaningful.
``--wait-idle SECONDS`` waits (before each round) for the machine to go idle.

Run: ``python benchmarks/env_throughput.py`` (about 3 minutes; ``--quick`` for a smoke run, ~6 s). Prints a
Markdown table and writes ``benchmarks/results/env_throughput.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from common import QUIET_CORES, code_version, machine_busy_s, own_cpu_s, wait_until_idle

import sim.mujoco  # noqa: F401  (chooses MUJOCO_GL; must come before `import mujoco`)

# isort: split
import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from sim.mujoco.arm.env import (
    ACTION_DIM,
    FINGER_OPEN,
    SUBSTEPS,
    ArmBatchedEnv,
    home_qpos,
)

DEFAULT_OUTPUT = Path(__file__).parent / "results" / "env_throughput.json"
CAMERA = "agentview"
TASK_NAME = "reach_target"  # every measurement runs this task, so that physics costs compare
SHORT_TASK, LONG_TASK = "reach_target", "push_to_zone"  # 60 and 200-step episodes (Disabled autoreset)
GYM_ENV_ID = "vla_rl/ReachTarget-v0"
STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS
TARGETS = {"raw": 1.4, "async": 5.0, "render": 0.8}  # minimum ratios: batched env / baseline


@dataclass(frozen=True)
class Settings:
    """Sizes and durations of one benchmark run."""

    seconds: float
    warmup_seconds: float
    repeats: int
    batched_sizes: tuple[int, ...]
    gym_envs: int
    async_sizes: tuple[int, ...]
    render_envs: int
    image_sizes: tuple[int, ...]

    @classmethod
    def full(cls) -> Settings:
        return cls(0.5, 0.1, 10, (16, 256), 16, (16, 2), 16, (64, 128))

    @classmethod
    def quick(cls) -> Settings:
        return cls(0.2, 0.05, 1, (4,), 2, (2,), 2, (64,))


@dataclass
class Sample:
    """Rates of one repetition of one measurement (per second; None where not applicable).

    ``other_cores``: how many cores other processes on the machine kept busy meanwhile (None off Linux).
    """

    env_steps: float | None = None
    physics_steps: float | None = None
    frames: float | None = None
    other_cores: float | None = None

    def primary(self) -> float:
        """The rate that ranks repetitions: frames/s, else physics steps/s."""
        return next(v for v in (self.frames, self.physics_steps, self.env_steps, 0.0) if v is not None)


@dataclass
class Measurement:
    """A measurement: a callable ``run(seconds) -> Sample`` plus how to release it.

    ``key`` identifies it for the ratios (``raw``, ``batched/16/default``, ``async/2``, ``render/64/env``).
    """

    key: str
    name: str
    num_envs: int | None
    parallelism: str
    run: Callable[[float], Sample]
    close: Callable[[], None] = lambda: None
    samples: list[Sample] = field(default_factory=list)

    def best(self) -> Sample:
        """The fastest repetition, among those during which other processes left the cores idle if any."""
        quiet = [s for s in self.samples if s.other_cores is not None and s.other_cores < QUIET_CORES]
        return max(quiet or self.samples, key=Sample.primary)

    def median(self, key: str) -> float | None:
        values = [getattr(s, key) for s in self.samples if getattr(s, key) is not None]
        return statistics.median(values) if values else None


# ----------------------------------------------------------------------------------------------------
# Timing


def time_loop(step: Callable[[], int], seconds: float) -> tuple[int, float]:
    """Call ``step`` (which returns how many units it did) until ``seconds`` have passed."""
    count = 0
    start = time.perf_counter()
    while True:
        count += step()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count, elapsed


def measure_sample(measurement: Measurement, seconds: float) -> Sample:
    """Run one repetition and note how many cores other processes used meanwhile (Linux only)."""
    try:
        machine, own, start = machine_busy_s(), own_cpu_s(), time.perf_counter()
    except (OSError, ValueError, IndexError):
        return measurement.run(seconds)
    sample = measurement.run(seconds)
    elapsed = time.perf_counter() - start
    other = (machine_busy_s() - machine) - (own_cpu_s() - own)
    sample.other_cores = max(other, 0.0) / elapsed
    return sample


def hold_controls() -> np.ndarray:
    """Actuator controls ``[9]`` that hold the arm at home with the fingers open."""
    return np.concatenate([home_qpos(), [FINGER_OPEN, FINGER_OPEN]])


def reference_scene() -> tuple[mujoco.MjModel, mujoco.MjData]:
    """Env 0's model and state after ``reset(seed=0)``, settled for 0.5 s with the hold controls."""
    env = ArmBatchedEnv(num_envs=1, tasks=(TASK_NAME,), cameras=(), num_threads=1)
    env.reset(seed=0)
    model = env.sim.models[0]
    data = mujoco.MjData(model)
    mujoco.mj_setState(model, data, env.sim.state[0], STATE_SPEC)
    env.close()
    data.ctrl[:] = hold_controls()
    mujoco.mj_step(model, data, nstep=200)
    return model, data


# ----------------------------------------------------------------------------------------------------
# 1. Raw physics


def raw_mj_step(warmup: float, num_threads: int = 1) -> Measurement:
    """``mj_step`` on the reference scene; with 2+ threads each has its own `MjData` (the GIL is released)."""
    model, data = reference_scene()
    start_state = np.zeros(mujoco.mj_stateSize(model, STATE_SPEC))
    mujoco.mj_getState(model, data, start_state, STATE_SPEC)
    datas = [copy.copy(data) for _ in range(num_threads)]
    pool = ThreadPoolExecutor(num_threads) if num_threads > 1 else None

    def run_one(data: mujoco.MjData, seconds: float) -> tuple[int, float]:
        def step() -> int:
            mujoco.mj_step(model, data, nstep=100)
            return 100

        return time_loop(step, seconds)

    def run(seconds: float) -> Sample:
        for data in datas:
            mujoco.mj_setState(model, data, start_state, STATE_SPEC)
        if pool is None:
            run_one(datas[0], warmup)
            count, elapsed = run_one(datas[0], seconds)
            return Sample(physics_steps=count / elapsed)
        list(pool.map(run_one, datas, [warmup] * num_threads))
        results = list(pool.map(run_one, datas, [seconds] * num_threads))
        return Sample(physics_steps=sum(count / elapsed for count, elapsed in results))

    def close() -> None:
        if pool is not None:
            pool.shutdown()

    plural = "s" * (num_threads != 1)
    name = f"raw mj_step ({num_threads} thread{plural}{', one MjData each' * (num_threads > 1)})"
    key = "raw" if num_threads == 1 else f"raw/{num_threads}"
    return Measurement(key, name, num_threads, f"{num_threads} thread{plural}", run, close)


# ----------------------------------------------------------------------------------------------------
# 2. and 4. The batched env


def random_action_stepper(env: gym.vector.VectorEnv, num_envs: int) -> Callable[[], int]:
    """Reset ``env`` and return a function that steps it with (cycled) random actions; returns N."""
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1.0, 1.0, (32, num_envs, ACTION_DIM)).astype(np.float32)
    cursor = [0]

    def step() -> int:
        env.step(actions[cursor[0] % len(actions)])
        cursor[0] += 1
        return num_envs

    return step


def batched_env(
    num_envs: int, warmup: float, num_threads: int | None = None, image_size: int | None = None
) -> Measurement:
    cameras = (CAMERA,) if image_size is not None else ()
    env = ArmBatchedEnv(
        num_envs=num_envs,
        tasks=(TASK_NAME,),
        cameras=cameras,
        image_size=image_size or 64,
        autoreset_mode=AutoresetMode.SAME_STEP,
        num_threads=num_threads,
    )
    step = random_action_stepper(env, num_envs)

    def run(seconds: float) -> Sample:
        time_loop(step, warmup)
        count, elapsed = time_loop(step, seconds)
        rate = count / elapsed
        frames = rate * len(cameras) if cameras else None
        return Sample(env_steps=rate, physics_steps=rate * SUBSTEPS, frames=frames)

    threads = env.sim.num_threads
    parallelism = f"{threads} rollout thread{'s' * (threads != 1)}"
    if image_size is None:
        key = f"batched/{num_envs}/{'default' if num_threads is None else num_threads}"
        name = "ArmBatchedEnv, no camera"
    else:
        key, name = (
            f"render/{image_size}/env",
            f"ArmBatchedEnv, {CAMERA} {image_size} px (env's render defaults)",
        )
    return Measurement(key, name, num_envs, parallelism, run, env.close)


def disabled_env(num_envs: int, image_size: int, finished: int, warmup: float) -> Measurement:
    """``ArmBatchedEnv`` in ``Disabled`` autoreset (how GRPO and evaluation collect episodes), with a camera.

    Each repetition resets ``finished`` envs to ``reach_target`` (60-step limit) and the others to
    ``push_to_zone`` (200), then, untimed, steps until the short episodes are over: what is timed is a
    batch whose first ``finished`` envs have ended. Rates count the env steps of the running envs only.
    """
    env = ArmBatchedEnv(
        num_envs=num_envs,
        tasks=(SHORT_TASK, LONG_TASK),
        cameras=(CAMERA,),
        image_size=image_size,
        autoreset_mode=AutoresetMode.DISABLED,
    )
    actions = np.random.default_rng(0).uniform(-1.0, 1.0, (32, num_envs, ACTION_DIM)).astype(np.float32)
    tasks = [SHORT_TASK] * finished + [LONG_TASK] * (num_envs - finished)
    cursor = [0]

    def step() -> int:
        env.step(actions[cursor[0] % len(actions)])
        cursor[0] += 1
        return num_envs - finished

    def run(seconds: float) -> Sample:
        env.reset(seed=0, options={"tasks": tasks})
        ended = np.zeros(num_envs, bool)
        while not ended[:finished].all():  # within the short task's 60 steps
            _, _, terminated, truncated, _ = env.step(actions[cursor[0] % len(actions)])
            cursor[0] += 1
            ended |= terminated | truncated
        time_loop(step, warmup)
        count, elapsed = time_loop(step, seconds)
        rate = count / elapsed
        return Sample(env_steps=rate, physics_steps=rate * SUBSTEPS, frames=rate)

    name = f"ArmBatchedEnv, {CAMERA} {image_size} px, Disabled autoreset, {finished} of N envs finished"
    return Measurement(f"disabled/{image_size}/{finished}", name, num_envs, "env defaults", run, env.close)


# ----------------------------------------------------------------------------------------------------
# 3. gymnasium vector envs over a single env


def make_single_env() -> gym.Env[Any, Any]:
    """One ``vla_rl/ReachTarget-v0`` env without cameras (module level: spawned workers unpickle it)."""
    import sim.gym  # noqa: F401  (registers the vla_rl/ ids)

    return gym.make(GYM_ENV_ID, cameras=())


def gym_vector_env(kind: str, num_envs: int, warmup: float) -> Measurement:
    factories = [make_single_env] * num_envs
    if kind == "sync":
        env: gym.vector.VectorEnv = SyncVectorEnv(factories, autoreset_mode=AutoresetMode.SAME_STEP)
        parallelism = "1 process"
    else:
        env = AsyncVectorEnv(factories, context="spawn", autoreset_mode=AutoresetMode.SAME_STEP)
        parallelism = f"{num_envs} processes"
    step = random_action_stepper(env, num_envs)

    def run(seconds: float) -> Sample:
        time_loop(step, warmup)
        count, elapsed = time_loop(step, seconds)
        return Sample(env_steps=count / elapsed, physics_steps=count / elapsed * SUBSTEPS)

    name = f"gymnasium {'SyncVectorEnv' if kind == 'sync' else 'AsyncVectorEnv'} of {GYM_ENV_ID}"
    return Measurement(f"{kind}/{num_envs}", name, num_envs, parallelism, run, env.close)


# ----------------------------------------------------------------------------------------------------
# 4. Bare render loops


class BareRenderLoop:
    """`mujoco.Renderer` drawing one fixed arm-scene state repeatedly, set up as BatchedRenderer does."""

    def __init__(self, size: int) -> None:
        model, self.data = reference_scene()
        model.vis.global_.offwidth = max(size, model.vis.global_.offwidth)
        model.vis.global_.offheight = max(size, model.vis.global_.offheight)
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        self.renderer = mujoco.Renderer(model, size, size)
        for flag in (
            mujoco.mjtRndFlag.mjRND_SHADOW,
            mujoco.mjtRndFlag.mjRND_REFLECTION,
            mujoco.mjtRndFlag.mjRND_SKYBOX,
        ):
            self.renderer.scene.flags[flag] = False
        self.option = mujoco.MjvOption()
        self.option.flags[mujoco.mjtVisFlag.mjVIS_STATIC] = True
        self.frame = np.empty((size, size, 3), np.uint8)

    def step(self) -> int:
        self.renderer.update_scene(self.data, camera=CAMERA, scene_option=self.option)
        self.renderer.render(out=self.frame)
        return 1

    def run(self, seconds: float) -> tuple[int, float]:
        return time_loop(self.step, seconds)

    def close(self) -> None:
        self.renderer.close()


def bare_render_in_process(size: int, warmup: float) -> Measurement:
    loop = BareRenderLoop(size)

    def run(seconds: float) -> Sample:
        loop.run(warmup)
        count, elapsed = loop.run(seconds)
        return Sample(frames=count / elapsed)

    return Measurement(
        f"render/{size}/bare1", f"bare render loop {size} px", None, "1 process", run, loop.close
    )


def _render_worker(connection: Connection, size: int) -> None:
    """Spawned process: build a bare render loop, then answer ``seconds`` with ``(frames, elapsed)``."""
    loop = BareRenderLoop(size)
    connection.send("ready")
    while (seconds := connection.recv()) is not None:
        connection.send(loop.run(seconds))
    loop.close()


def bare_render_processes(size: int, num_processes: int, warmup: float) -> Measurement:
    context = mp.get_context("spawn")
    pipes, processes = [], []
    for _ in range(num_processes):
        parent, child = context.Pipe()
        process = context.Process(target=_render_worker, args=(child, size), daemon=True)
        process.start()
        pipes.append(parent)
        processes.append(process)
    for pipe in pipes:
        if pipe.recv() != "ready":
            raise RuntimeError("render worker failed to start")

    def run_all(seconds: float) -> float:
        for pipe in pipes:
            pipe.send(seconds)
        results = [pipe.recv() for pipe in pipes]
        return sum(count / elapsed for count, elapsed in results)

    def run(seconds: float) -> Sample:
        run_all(warmup)
        return Sample(frames=run_all(seconds))

    def close() -> None:
        for pipe in pipes:
            pipe.send(None)
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()

    key, name = f"render/{size}/bare{num_processes}", f"bare render loop {size} px"
    return Measurement(key, name, None, f"{num_processes} processes", run, close)


# ----------------------------------------------------------------------------------------------------
# Running, ratios and reporting


def build_measurements(settings: Settings) -> list[Measurement]:
    warmup = settings.warmup_seconds
    measurements = [raw_mj_step(warmup), raw_mj_step(warmup, num_threads=os.cpu_count() or 1)]
    for num_envs in settings.batched_sizes:
        measurements.append(batched_env(num_envs, warmup))
        measurements.append(batched_env(num_envs, warmup, num_threads=1))
    measurements.append(gym_vector_env("sync", settings.gym_envs, warmup))
    for num_envs in settings.async_sizes:
        measurements.append(gym_vector_env("async", num_envs, warmup))
    for size in settings.image_sizes:
        measurements.append(batched_env(settings.render_envs, warmup, image_size=size))
        measurements.append(bare_render_in_process(size, warmup))
        measurements.append(bare_render_processes(size, 2, warmup))
    size, num_envs = settings.image_sizes[0], settings.render_envs
    measurements.append(disabled_env(num_envs, size, 0, warmup))
    measurements.append(disabled_env(num_envs, size, num_envs // 2, warmup))
    return measurements


def ratio_row(by_key: dict[str, Measurement], name: str, numerator: str, denominator: str, rate: str) -> dict:
    """``best(numerator) / best(denominator)`` of the ``rate`` (``physics_steps``, ``frames``)."""
    top, bottom = getattr(by_key[numerator].best(), rate), getattr(by_key[denominator].best(), rate)
    value = top / bottom if top is not None and bottom else None
    return {"name": name, "numerator": numerator, "denominator": denominator, "value": value}


def compute_ratios(measurements: list[Measurement], settings: Settings) -> list[dict[str, Any]]:
    """The issue's target ratios (best repetition on both sides), plus context rows without a target."""
    by_key = {m.key: m for m in measurements}
    cores = os.cpu_count() or 1
    rows: list[dict[str, Any]] = []
    if cores > 1:
        name = f"raw mj_step on {cores} threads / 1 thread (what the machine allows)"
        rows.append(ratio_row(by_key, name, f"raw/{cores}", "raw", "physics_steps") | {"target": None})
    for n in settings.batched_sizes:
        name = f"batched no-render N={n} / raw mj_step (physics steps/s)"
        rows.append(
            ratio_row(by_key, name, f"batched/{n}/default", "raw", "physics_steps") | {"target": "raw"}
        )
    asyncs = [by_key[f"async/{m}"] for m in settings.async_sizes]
    fastest = max(asyncs, key=lambda m: m.best().primary())
    for n in settings.batched_sizes:
        name = f"batched N={n} / AsyncVectorEnv N={fastest.num_envs} (the faster one; physics steps/s)"
        rows.append(
            ratio_row(by_key, name, f"batched/{n}/default", fastest.key, "physics_steps")
            | {"target": "async"}
        )
    for size in settings.image_sizes:
        name = f"batched {size} px / bare render loop on 2 processes (frames/s)"
        rows.append(
            ratio_row(by_key, name, f"render/{size}/env", f"render/{size}/bare2", "frames")
            | {"target": "render"}
        )
    size, half = settings.image_sizes[0], settings.render_envs // 2
    name = (
        f"Disabled autoreset {size} px, half the envs finished / none (env steps/s of the running envs; "
        "0.5 if finished envs cost as much as running ones)"
    )
    rows.append(
        ratio_row(by_key, name, f"disabled/{size}/{half}", f"disabled/{size}/0", "env_steps")
        | {"target": None}
    )
    for row in rows:
        row["target"] = TARGETS.get(row["target"])
        row["met"] = None if row["value"] is None or row["target"] is None else row["value"] >= row["target"]
    return rows


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(measurements: list[Measurement], ratios: list[dict[str, Any]], settings: Settings) -> str:
    other = [s.other_cores for m in measurements for s in m.samples if s.other_cores is not None]
    lines = [
        f"Best of {settings.repeats} x {settings.seconds:g} s (interleaved), {os.cpu_count()} cores, "
        f"mujoco {mujoco.__version__}, MUJOCO_GL={os.environ.get('MUJOCO_GL')}, SUBSTEPS={SUBSTEPS}, "
        f"task {TASK_NAME}. Other processes kept {fmt(statistics.mean(other) if other else None, 2)} "
        "cores busy on average (column 'other': during the best repetition). The single-thread limit is "
        "sampled every 4th slot of a round.",
        "",
        "| Measurement | N | Parallelism | env steps/s | physics steps/s | frames/s | other |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for m in measurements:
        best = m.best()
        lines.append(
            f"| {m.name} | {m.num_envs or '-'} | {m.parallelism} | {fmt(best.env_steps)} | "
            f"{fmt(best.physics_steps)} | {fmt(best.frames)} | {fmt(best.other_cores, 2)} |"
        )
    lines += ["", "| Ratio | Measured | Target | Met |", "|---|---:|---:|---|"]
    for row in ratios:
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
        target = "-" if row["target"] is None else f">= {row['target']:g}x"
        lines.append(f"| {row['name']} | {fmt(row['value'], 2)}x | {target} | {met} |")
    scaling = ratios[0]["value"] if ratios and ratios[0]["target"] is None else None
    if scaling is not None and scaling > 1.05 * (os.cpu_count() or 1):
        lines += [
            "",
            f"Warning: {scaling:.2f}x on {os.cpu_count()} threads means the 1-thread limit was measured "
            "low (host noise); the ratios against it are inflated. Run again.",
        ]
    return "\n".join(lines)


def gl_renderer_name() -> str:
    """The OpenGL renderer string of an off-screen context (e.g. llvmpipe = software)."""
    try:
        from OpenGL import GL

        context = mujoco.GLContext(16, 16)
        context.make_current()
        name = GL.glGetString(GL.GL_RENDERER).decode()
        context.free()
        return name
    except Exception as error:
        return f"unknown ({type(error).__name__})"


def write_json(
    path: Path, measurements: list[Measurement], ratios: list[dict[str, Any]], **meta: Any
) -> None:
    results = []
    for m in measurements:
        best = m.best()
        row: dict[str, Any] = {
            "key": m.key,
            "name": m.name,
            "num_envs": m.num_envs,
            "parallelism": m.parallelism,
        }
        for key in ("env_steps", "physics_steps", "frames"):
            if getattr(best, key) is not None:
                row[f"{key}_per_s"] = {
                    "best": getattr(best, key),
                    "median": m.median(key),
                    "all": [getattr(s, key) for s in m.samples],
                }
        row["other_cores"] = [s.other_cores for s in m.samples]
        results.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "results": results, "ratios": ratios}, indent=2) + "\n")


def round_order(measurements: list[Measurement], raw_every: int = 4) -> list[Measurement]:
    """One round: every measurement once, and the single-thread limit again every ``raw_every`` of them.

    The limit is the denominator of the main ratio and a single thread is the most exposed to a noisy
    neighbour on the host (its rate swings 1.5x here with the guest idle), so it gets more samples.
    """
    raw = next(m for m in measurements if m.key == "raw")
    order: list[Measurement] = []
    for index, m in enumerate(m for m in measurements if m is not raw):
        if index % raw_every == 0:
            order.append(raw)
        order.append(m)
    return order


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and durations (smoke test)")
    parser.add_argument("--seconds", type=float, help="duration of each measurement")
    parser.add_argument("--repeats", type=int, help="interleaved repetitions (best is reported)")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each round, wait up to this long for other processes to leave the cores idle",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results path")
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings.full()
    if args.seconds is not None:
        settings = replace(settings, seconds=args.seconds)
    if args.repeats is not None:
        settings = replace(settings, repeats=args.repeats)

    started = time.perf_counter()
    load_before = os.getloadavg()
    measurements = build_measurements(settings)
    setup_s = time.perf_counter() - started
    try:
        for m in measurements:  # first touch (caches, lazy GL state) outside the timed repetitions
            m.run(settings.warmup_seconds)
        for _ in range(settings.repeats):
            wait_until_idle(args.wait_idle)
            for m in round_order(measurements):
                m.samples.append(measure_sample(m, settings.seconds))
    finally:
        for m in measurements:
            m.close()
    ratios = compute_ratios(measurements, settings)
    print(markdown(measurements, ratios, settings))
    meta = {
        "quick": args.quick,
        "settings": asdict(settings),
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "mujoco": mujoco.__version__,
            "gymnasium": gym.__version__,
            "mujoco_gl": os.environ.get("MUJOCO_GL"),
            "gl_renderer": gl_renderer_name(),
        },
        "task": TASK_NAME,
        "code": code_version("sim"),
        "substeps": SUBSTEPS,
        "setup_seconds": setup_s,
        "total_seconds": time.perf_counter() - started,
    }
    write_json(args.output, measurements, ratios, **meta)
    print(f"\nwrote {args.output} ({meta['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
