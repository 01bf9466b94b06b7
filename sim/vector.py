"""Process-parallel workers over shared memory, behind the same `BatchedEnv` contract as an in-process env.

Heavy simulators (LIBERO, robosuite) step at a few frames per second per core, so they run in worker
processes: `ProcessVectorEnv` starts W workers, each hosting one `BatchedEnv` of k environments built by a
picklable zero-argument factory, and presents the N = W * k environments as one `BatchedEnv`. Worker w
runs environments ``[w * k, (w + 1) * k)``.

Data path: fixed-shape numeric arrays (the Box entries of the observation dict, the final observations of
`AutoresetMode.SAME_STEP`, actions, rewards, terminated, truncated, success) live in
`multiprocessing.shared_memory` blocks that the parent owns; each block holds all N rows and each worker
reads and writes only its own k rows. Only small control messages travel over pipes: the command, the
``task`` strings and the rest of ``info`` (task and initial-state ids, final-observation masks, ...).

Failures: a worker that dies (killed, segfault), raises inside its env, or does not answer within
``step_timeout_s`` is killed and replaced by a fresh process with a freshly built env, whose k environments
are reset (same split and tasks as before). In the ``step`` where that happens, those environments return
the first observation of their new episode with ``truncated=True``, ``reward=0``, ``success=False``,
``info["worker_restarted"]=True`` and no final observation (``info["_final_obs"]`` is False there: the
last observation died with the worker). Under `AutoresetMode.DISABLED` they then stay finished (frozen
observation, ``truncated=True``, actions ignored) until the next ``reset``. A restart needed while serving
``expert_action`` or ``tasks`` is reported the same way at the next ``step``, which does not step those
environments. Nothing blocks for longer than ``step_timeout_s`` (``start_timeout_s`` while a worker
builds its env); a worker that cannot be restarted closes the env and raises `RuntimeError`.
``num_restarts`` counts restarts. An exception in the parent while it waits for workers (e.g.
KeyboardInterrupt) also closes the env, since unread replies would leave the pipes out of step.

Workers are started with the ``spawn`` (default) or ``forkserver`` method, never ``fork``: MuJoCo / EGL
contexts and torch thread pools do not survive a fork. The factory must therefore be importable by a
fresh interpreter (a module-level class or function, or a `functools.partial` of one).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import signal
import time
import traceback
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Literal

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from sim.core import (
    AutoresetMode,
    BatchedEnv,
    InitStateSplit,
    ResetRequest,
    TaskSpec,
    check_seed,
    parse_reset_options,
    validate_actions,
)

__all__ = ["ProcessVectorEnv"]

logger = logging.getLogger(__name__)

EnvFactory = Callable[[], BatchedEnv]
"""A picklable zero-argument callable that builds the `BatchedEnv` hosted by one worker."""

_ResetArgs = tuple[int | None, dict[str, Any]]
"""The ``(seed, options)`` of one worker's ``reset``."""

_OBS = "obs/"
_FINAL = "final/"
_CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class _WorkerSpec:
    """What a worker's env looks like; every worker must report the same spec."""

    num_envs: int
    single_observation_space: spaces.Space[Any]
    single_action_space: spaces.Space[Any]
    task_specs: dict[str, TaskSpec]
    cameras: tuple[str, ...]
    metadata: dict[str, Any]

    @classmethod
    def of(cls, env: BatchedEnv) -> _WorkerSpec:
        return cls(
            num_envs=env.num_envs,
            single_observation_space=env.single_observation_space,
            single_action_space=env.single_action_space,
            task_specs=dict(env.task_specs),
            cameras=tuple(env.cameras),
            metadata=dict(env.metadata),
        )


@dataclass(frozen=True)
class _BufferSpec:
    """One shared-memory array of N rows: the block name, the full shape and the dtype."""

    shm_name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class _Reply:
    """A worker's answer to ``reset`` / ``step``: everything that is not in shared memory.

    ``obs_extra`` holds the non-array observation entries (``task``: k strings), ``info`` the env's info
    without ``success`` and without the array entries of ``final_obs`` (both in shared memory), and
    ``tasks`` the k task names the worker's env is running.
    """

    obs_extra: dict[str, Any]
    info: dict[str, Any]
    tasks: tuple[str, ...]


# ----------------------------------------------------------------------------------------------------------
# Worker side


def _worker_main(factory: EnvFactory, conn: Connection) -> None:
    """Build the env, report its spec, then serve commands until ``close`` or until the parent goes away.

    Any exception is sent back as ``("error", traceback)`` and ends the process (the parent restarts it).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes us.
    env: BatchedEnv | None = None
    blocks: list[SharedMemory] = []
    views: dict[str, np.ndarray] = {}
    try:
        env = factory()
        conn.send(("ok", _WorkerSpec.of(env)))
        while True:
            command, payload = conn.recv()
            if command == "close":
                break
            if command == "attach":
                blocks, views = _map_buffers(payload)
                result: Any = None
            elif command == "reset":
                seed, options = payload
                obs, info = env.reset(seed=seed, options=options)
                result = _publish(env, obs, info, views)
            elif command == "step":
                obs, reward, terminated, truncated, info = env.step(views["action"].copy())
                views["reward"][:] = reward
                views["terminated"][:] = terminated
                views["truncated"][:] = truncated
                result = _publish(env, obs, info, views)
            elif command == "expert_action":
                result = np.asarray(env.expert_action())
            elif command == "tasks":
                result = tuple(env.tasks)
            else:
                raise ValueError(f"unknown worker command {command!r}")
            conn.send(("ok", result))
    except EOFError:
        pass  # the parent closed its end of the pipe: nothing left to serve.
    except Exception:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
    finally:
        views.clear()
        for block in blocks:
            block.close()
        if env is not None:
            env.close()


def _map_buffers(
    layout: dict[str, tuple[_BufferSpec, slice]],
) -> tuple[list[SharedMemory], dict[str, np.ndarray]]:
    """Map the parent's shared-memory blocks and return views of this worker's rows."""
    blocks: list[SharedMemory] = []
    views: dict[str, np.ndarray] = {}
    for key, (spec, rows) in layout.items():
        block = SharedMemory(name=spec.shm_name)
        blocks.append(block)
        views[key] = np.ndarray(spec.shape, dtype=spec.dtype, buffer=block.buf)[rows]
    return blocks, views


def _publish(
    env: BatchedEnv, obs: dict[str, Any], info: dict[str, Any], views: dict[str, np.ndarray]
) -> _Reply:
    """Write the array parts of ``obs``, ``info["success"]`` and ``info["final_obs"]`` to shared memory."""
    info = dict(info)
    views["success"][:] = info.pop("success", False)
    if "final_obs" in info:
        info["final_obs"] = _write_arrays(info["final_obs"], views, _FINAL)
    return _Reply(obs_extra=_write_arrays(obs, views, _OBS), info=info, tasks=tuple(env.tasks))


def _write_arrays(obs: dict[str, Any], views: dict[str, np.ndarray], prefix: str) -> dict[str, Any]:
    """Copy the entries that have a shared-memory view into it; return the others."""
    rest = {}
    for key, value in obs.items():
        view = views.get(prefix + key)
        if view is None:
            rest[key] = value
        else:
            view[...] = value
    return rest


# ----------------------------------------------------------------------------------------------------------
# Parent side


@dataclass
class _Resources:
    """Everything that must be released when the env is closed or garbage collected.

    Kept apart from `ProcessVectorEnv` so that a `weakref.finalize` can release it without keeping the env
    alive; also released at interpreter exit.
    """

    processes: dict[int, BaseProcess] = field(default_factory=dict)
    conns: dict[int, Connection] = field(default_factory=dict)
    blocks: list[SharedMemory] = field(default_factory=list)
    views: dict[str, np.ndarray] = field(default_factory=dict)

    def stop_worker(self, index: int) -> None:
        """Kill worker ``index`` at once (it is broken or hung) and forget it."""
        process = self.processes.pop(index, None)
        conn = self.conns.pop(index, None)
        if conn is not None:
            conn.close()
        if process is not None:
            process.kill()
            process.join()

    def release(self) -> None:
        """Ask every worker to close its env, kill those that do not exit, unlink the shared memory."""
        for conn in self.conns.values():
            with contextlib.suppress(OSError):
                conn.send(("close", None))
        deadline = time.monotonic() + _CLOSE_TIMEOUT_S
        for process in self.processes.values():
            process.join(max(deadline - time.monotonic(), 0.0))
        for index in list(self.processes):
            self.stop_worker(index)
        self.views.clear()
        for block in self.blocks:
            with contextlib.suppress(FileNotFoundError):
                block.unlink()
            with contextlib.suppress(BufferError):  # a view is still referenced: the mapping goes with us.
                block.close()
        self.blocks.clear()


class ProcessVectorEnv(BatchedEnv):
    """N = W * k environments in W worker processes (k per worker), with the `BatchedEnv` contract.

    Spaces, ``task_specs``, ``cameras`` and ``metadata`` (including the autoreset mode) are those of the
    worker env, batched to N environments. Observations, rewards, ``terminated``, ``truncated`` and info
    are those of the worker envs concatenated along the env axis; on top of them ``info`` always holds
    ``worker_restarted`` (bool ``[N]``: environments whose worker was restarted during this call, see the
    module docstring) and, after ``step``, ``action_clipped`` (bool ``[N]``). Returned arrays are copies.

    Seeding: ``reset(seed=s)`` resets worker w with seed ``s + w * k``, so when the worker env seeds its
    environment j with ``seed + j`` (as gymnasium's vector envs do) the result equals one in-process env
    of N environments reset with seed ``s``.

    Example:
        >>> factory = functools.partial(LiberoEnv, suite="libero_spatial", num_envs=2)
        >>> with ProcessVectorEnv(factory, num_workers=8) as envs:  # 16 environments
        ...     obs, info = envs.reset(seed=0)
        ...     obs, reward, terminated, truncated, info = envs.step(envs.expert_action())

    """

    def __init__(
        self,
        env_factory: EnvFactory,
        num_workers: int,
        *,
        step_timeout_s: float = 60.0,
        start_timeout_s: float = 300.0,
        start_method: Literal["spawn", "forkserver"] = "spawn",
    ) -> None:
        """Start the workers and wait until each has built its env.

        Args:
            env_factory: picklable zero-argument callable building the k-environment `BatchedEnv` of one
                worker (a module-level class or function, or a `functools.partial` of one).
            num_workers: W, the number of worker processes.
            step_timeout_s: how long ``reset``, ``step``, ``expert_action`` and ``tasks`` wait for a
                worker before declaring it hung and restarting it.
            start_timeout_s: how long a new worker may take to build its env.
            start_method: ``"spawn"`` or ``"forkserver"`` (``"fork"`` is refused: simulator and render
                contexts and torch threads do not survive it).

        Raises:
            ValueError: a bad argument, or a worker env whose autoreset mode is neither SAME_STEP nor
                DISABLED, or whose spaces are not a Dict observation and a 1-D Box action.
            RuntimeError: a worker failed to build its env in time, or the workers disagree on spaces.

        """
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        if step_timeout_s <= 0 or start_timeout_s <= 0:
            raise ValueError(
                f"timeouts must be positive, got step_timeout_s={step_timeout_s}, "
                f"start_timeout_s={start_timeout_s}"
            )
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(f"start_method must be 'spawn' or 'forkserver', got {start_method!r}")
        self._context = mp.get_context("spawn") if start_method == "spawn" else mp.get_context("forkserver")
        self.num_workers = num_workers
        self.step_timeout_s = step_timeout_s
        self.start_timeout_s = start_timeout_s
        self.num_restarts = 0
        self._factory = env_factory
        self._resources = _Resources()
        self._finalizer = weakref.finalize(self, self._resources.release)
        try:
            self._spec = self._start_workers(range(num_workers), expected=None)
            self._configure(self._spec)
            self._attach(range(num_workers))
        except BaseException:
            self._finalizer()
            raise
        self._replies: dict[int, _Reply] = {}
        self._worker_tasks: dict[int, tuple[str, ...]] = {}
        self._split = InitStateSplit.TRAIN
        self._seed: int | None = None
        self._restarted = np.zeros(num_workers, dtype=bool)  # restarted, not yet reported by step
        self._frozen = np.zeros(num_workers, dtype=bool)  # DISABLED mode: episode cut by a restart

    def _configure(self, spec: _WorkerSpec) -> None:
        """Take the spaces and metadata from the worker spec and lay out the shared memory."""
        mode = spec.metadata.get("autoreset_mode")
        if mode not in (AutoresetMode.SAME_STEP, AutoresetMode.DISABLED):
            raise ValueError(f"worker env autoreset_mode must be SAME_STEP or DISABLED, got {mode!r}")
        observation_space, action_space = spec.single_observation_space, spec.single_action_space
        if not isinstance(observation_space, spaces.Dict):
            raise ValueError(f"worker env observation space must be a Dict, got {observation_space}")
        if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
            raise ValueError(f"worker env action space must be a 1-D Box, got {action_space}")
        self.envs_per_worker = spec.num_envs
        self.num_envs = self.num_workers * spec.num_envs
        self.single_observation_space = observation_space
        self.single_action_space = action_space
        self.observation_space = batch_space(observation_space, self.num_envs)
        self.action_space = batch_space(action_space, self.num_envs)
        self.task_specs = spec.task_specs
        self.cameras = spec.cameras
        self.metadata = dict(spec.metadata)
        self._action_dim = action_space.shape[0]
        boxes = {key: box for key, box in observation_space.spaces.items() if isinstance(box, spaces.Box)}
        self._array_keys = list(boxes)
        shapes: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {
            "action": ((self._action_dim,), np.dtype(np.float64)),
            "reward": ((), np.dtype(np.float64)),
            "terminated": ((), np.dtype(bool)),
            "truncated": ((), np.dtype(bool)),
            "success": ((), np.dtype(bool)),
        }
        for key, box in boxes.items():
            shapes[_OBS + key] = shapes[_FINAL + key] = (box.shape, np.dtype(box.dtype))
        self._buffers: dict[str, _BufferSpec] = {}
        for key, (shape, dtype) in shapes.items():
            full_shape = (self.num_envs, *shape)
            block = SharedMemory(create=True, size=max(int(np.prod(full_shape)) * dtype.itemsize, 1))
            self._resources.blocks.append(block)
            self._buffers[key] = _BufferSpec(block.name, full_shape, dtype.str)
            self._resources.views[key] = np.ndarray(full_shape, dtype=dtype, buffer=block.buf)
        self._views = self._resources.views

    # ------------------------------------------------------------------------------------------------------
    # The BatchedEnv contract

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task each of the N environments is running, asked from the workers."""
        return tuple(name for names in self._query("tasks") for name in names)

    def expert_action(self) -> np.ndarray:
        """Return the workers' scripted expert actions, float32 ``[N, A]``."""
        return np.concatenate(self._query("expert_action")).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Reset all N environments; ``options`` as in `sim.core.parse_reset_options` (per-env lists of N).

        Seed and options are validated here, before any worker sees them. Returns ``(obs, info)`` with
        obs arrays ``[N, ...]``, ``obs["task"]`` N strings, and info arrays ``[N]``.
        """
        self._check_open()
        seed = check_seed(seed)
        request = parse_reset_options(options, self.num_envs, tuple(self.task_specs))
        super().reset(seed=seed)
        payloads = {w: self._reset_payload(w, seed, request) for w in range(self.num_workers)}
        replies, failures = self._request(payloads, "reset", self.step_timeout_s)
        self._record(replies)
        self._restart(failures, payloads)
        self._split, self._seed = request.split, seed
        restarted = np.zeros(self.num_workers, dtype=bool)
        restarted[list(failures)] = True
        self._restarted[:] = False
        self._frozen[:] = False
        obs, info = self._assemble(cut=np.zeros(self.num_envs, dtype=bool))
        info["worker_restarted"] = np.repeat(restarted, self.envs_per_worker)
        return obs, info

    def step(
        self, actions: object
    ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step all N environments with ``actions`` (float ``[N, A]`` in [-1, 1]).

        Actions are validated here (`sim.core.validate_actions`): a bad batch raises before any worker
        sees it. Returns ``(obs, reward [N] float64, terminated [N], truncated [N], info)``.
        """
        self._check_open()
        if len(self._replies) < self.num_workers:
            raise RuntimeError("call reset() before step()")
        clipped, clipped_mask = validate_actions(actions, self.num_envs, self._action_dim)
        self._views["action"][:] = clipped
        idle = self._restarted | self._frozen
        payloads = {w: None for w in range(self.num_workers) if not idle[w]}
        replies, failures = self._request(payloads, "step", self.step_timeout_s)
        self._record(replies)
        self._restart(failures, {w: self._restart_payload(w) for w in failures})
        cut = np.repeat(self._restarted | self._frozen, self.envs_per_worker)
        reward = self._views["reward"].copy()
        reward[cut] = 0.0
        terminated = self._views["terminated"] & ~cut
        truncated = self._views["truncated"] | cut
        obs, info = self._assemble(cut)
        info["action_clipped"] = clipped_mask
        info["worker_restarted"] = np.repeat(self._restarted, self.envs_per_worker)
        if self.metadata["autoreset_mode"] is AutoresetMode.DISABLED:
            self._frozen |= self._restarted
        self._restarted[:] = False
        return obs, reward, terminated, truncated, info

    def __enter__(self) -> ProcessVectorEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close_extras(self, **kwargs: Any) -> None:
        """Close the worker envs, stop the workers and unlink the shared memory (idempotent)."""
        self._finalizer()

    # ------------------------------------------------------------------------------------------------------
    # Internals

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("ProcessVectorEnv is closed")

    def _record(self, replies: dict[int, _Reply]) -> None:
        """Keep the latest ``reset`` / ``step`` reply of each worker and the tasks it runs."""
        self._replies.update(replies)
        for w, reply in replies.items():
            self._worker_tasks[w] = reply.tasks

    def _assemble(self, cut: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
        """Build the batched ``(obs, info)`` from shared memory and the latest reply of every worker.

        ``cut`` (bool ``[N]``) marks environments whose episode was cut by a worker restart: no success.
        """
        parts = [self._replies[w] for w in range(self.num_workers)]
        obs = {key: self._views[_OBS + key].copy() for key in self._array_keys}
        obs.update(_merge([part.obs_extra for part in parts], self.envs_per_worker, "obs"))
        info = _merge([part.info for part in parts], self.envs_per_worker, "info")
        info["success"] = self._views["success"] & ~cut
        if "final_obs" in info:
            has_final = np.repeat([("final_obs" in part.info) for part in parts], self.envs_per_worker)
            for key in self._array_keys:
                final = self._views[_FINAL + key].copy()
                final[~has_final] = 0
                info["final_obs"][key] = final
        return obs, info

    def _reset_payload(self, worker: int, seed: int | None, request: ResetRequest) -> _ResetArgs:
        """Return the ``(seed, options)`` of worker ``worker``'s slice of a reset request."""
        rows = self._rows(worker)
        options: dict[str, Any] = {"split": request.split.value}
        if request.tasks is not None:
            options["tasks"] = list(request.tasks[rows])
        if request.init_state_ids is not None:
            options["init_state_ids"] = request.init_state_ids[rows]
        return (None if seed is None else seed + worker * self.envs_per_worker), options

    def _restart_payload(self, worker: int) -> _ResetArgs:
        """Return a restarted worker's reset arguments: same split and tasks, a seed derived from the last."""
        seed = None
        if self._seed is not None:
            seed = int(np.random.SeedSequence([self._seed, worker, self.num_restarts]).generate_state(1)[0])
        options: dict[str, Any] = {"split": self._split.value}
        if worker in self._worker_tasks:
            options["tasks"] = list(self._worker_tasks[worker])
        return seed, options

    def _rows(self, worker: int) -> slice:
        return slice(worker * self.envs_per_worker, (worker + 1) * self.envs_per_worker)

    def _query(self, command: str) -> list[Any]:
        """Send a read-only ``command`` to every worker; restart failing workers and ask them again.

        The restart is reported at the next `step` (``truncated`` and ``info["worker_restarted"]``).
        """
        self._check_open()
        payloads = {w: None for w in range(self.num_workers)}
        replies, failures = self._request(payloads, command, self.step_timeout_s)
        if failures:
            self._restart(failures, {w: self._restart_payload(w) for w in failures})
            retried, still_failing = self._request({w: None for w in failures}, command, self.step_timeout_s)
            if still_failing:
                raise RuntimeError(f"restarted workers failed again on {command!r}: {still_failing}")
            replies.update(retried)
        return [replies[w] for w in range(self.num_workers)]

    def _request(
        self, payloads: dict[int, Any], command: str, timeout_s: float
    ) -> tuple[dict[int, Any], dict[int, str]]:
        """Send ``(command, payload)`` to each worker in ``payloads`` and wait at most ``timeout_s`` for all.

        Returns ``(replies, failures)``: the results of the workers that answered, and for the others
        why they failed (an exception traceback, an exit code, or a timeout). Never blocks longer.
        """
        failures: dict[int, str] = {}
        waiting: list[int] = []
        try:
            for w, payload in payloads.items():
                try:
                    self._resources.conns[w].send((command, payload))
                    waiting.append(w)
                except OSError as error:
                    failures[w] = f"could not send {command!r}: {error!r}"
            replies, wait_failures = self._wait(waiting, timeout_s, command)
        except BaseException:  # e.g. KeyboardInterrupt: unread replies would desynchronize the pipes
            self.close()
            raise
        failures.update(wait_failures)
        return replies, failures

    def _wait(
        self, workers: Iterable[int], timeout_s: float, command: str
    ) -> tuple[dict[int, Any], dict[int, str]]:
        """Collect one message from each of ``workers`` (see `_request`)."""
        conns, processes = self._resources.conns, self._resources.processes
        owner: dict[Any, int] = {}
        for w in workers:
            owner[conns[w]] = w
            owner[processes[w].sentinel] = w
        pending = set(owner.values())
        replies: dict[int, Any] = {}
        failures: dict[int, str] = {}
        deadline = time.monotonic() + timeout_s
        while pending:
            remaining = deadline - time.monotonic()
            ready = wait([obj for obj, w in owner.items() if w in pending], timeout=max(remaining, 0.0))
            if not ready and remaining <= 0:
                for w in pending:
                    failures[w] = f"no answer to {command!r} within {timeout_s} s"
                break
            for obj in ready:
                w = owner[obj]
                if w not in pending:
                    continue
                pending.discard(w)
                try:
                    status, value = conns[w].recv() if conns[w].poll() else ("exit", None)
                except (EOFError, OSError):
                    status, value = "exit", None
                if status == "ok":
                    replies[w] = value
                elif status == "error":
                    failures[w] = f"exception in {command!r}:\n{value}"
                else:
                    processes[w].join(_CLOSE_TIMEOUT_S)
                    failures[w] = f"process exited with code {processes[w].exitcode} during {command!r}"
        return replies, failures

    def _restart(self, failures: dict[int, str], payloads: dict[int, _ResetArgs]) -> None:
        """Replace the failed workers by fresh ones and reset them with ``payloads`` (worker -> reset args).

        A replacement that cannot be started or reset closes this env and raises `RuntimeError`.
        """
        if not failures:
            return
        for w, reason in failures.items():
            logger.error("ProcessVectorEnv worker %d failed; restarting it. %s", w, reason)
            self._resources.stop_worker(w)
        self.num_restarts += len(failures)
        try:
            self._start_workers(failures, expected=self._spec)
            self._attach(failures)
            replies, still_failing = self._request(
                {w: payloads[w] for w in failures}, "reset", self.step_timeout_s
            )
            if still_failing:
                raise RuntimeError(f"restarted ProcessVectorEnv workers failed to reset: {still_failing}")
        except BaseException:
            self.close()
            raise
        self._record(replies)
        self._restarted[list(failures)] = True

    def _start_workers(self, workers: Iterable[int], expected: _WorkerSpec | None) -> _WorkerSpec:
        """Spawn ``workers`` and wait until each has built its env; check they all match ``expected``.

        Returns the spec of the first worker (the reference when ``expected`` is None).
        """
        workers = list(workers)
        for w in workers:
            parent_conn, child_conn = self._context.Pipe()
            process = self._context.Process(
                target=_worker_main,
                args=(self._factory, child_conn),
                name=f"ProcessVectorEnv-worker-{w}",
                daemon=True,
            )
            process.start()
            child_conn.close()
            self._resources.processes[w] = process
            self._resources.conns[w] = parent_conn
        specs, failures = self._wait(workers, self.start_timeout_s, "start")
        if failures:
            raise RuntimeError(f"ProcessVectorEnv workers failed to start: {failures}")
        reference = expected if expected is not None else specs[workers[0]]
        for w, spec in specs.items():
            if spec != reference:
                raise RuntimeError(f"worker {w} env differs from the others: {spec} != {reference}")
        return reference

    def _attach(self, workers: Iterable[int]) -> None:
        """Give each of ``workers`` the shared-memory layout and its rows."""
        payloads = {
            w: {key: (buffer, self._rows(w)) for key, buffer in self._buffers.items()} for w in workers
        }
        _, failures = self._request(payloads, "attach", self.step_timeout_s)
        if failures:
            raise RuntimeError(f"ProcessVectorEnv workers failed to attach shared memory: {failures}")


def _merge(parts: Sequence[Any], size: int, name: str) -> Any:
    """Concatenate per-worker values (k per worker) along the env axis into one value for all envs.

    Dicts merge key by key; arrays become one ``[W * k, ...]`` array; tuples and lists one tuple. A
    worker without a value (``None``, e.g. no ``final_obs`` this step) contributes zeros (arrays) or
    ``None`` (tuples).
    """
    present = [part for part in parts if part is not None]
    first = present[0]
    if isinstance(first, dict):
        keys = dict.fromkeys(key for part in present for key in part)
        return {
            key: _merge([None if part is None else part.get(key) for part in parts], size, f"{name}[{key!r}]")
            for key in keys
        }
    for part in present:
        if not isinstance(part, np.ndarray | tuple | list) or len(part) != size:
            raise TypeError(f"{name} of a worker env must hold one value per env ({size}), got {part!r}")
    if isinstance(first, np.ndarray):
        merged = np.zeros((size * len(parts), *first.shape[1:]), dtype=first.dtype)
        for index, part in enumerate(parts):
            if part is not None:
                merged[index * size : (index + 1) * size] = part
        return merged
    return tuple(item for part in parts for item in (part if part is not None else (None,) * size))
