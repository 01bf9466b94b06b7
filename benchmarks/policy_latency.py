"""Latency and throughput of the VLA policy: acting (parallel vs autoregressive decoding) and SFT steps.

What is measured, in one run, for the ``tiny`` and ``small`` backbones (``VLAConfig(backbone=...)``, default
sizes otherwise: K x D = 8 x 7 action tokens, 2 cameras at 64 px, 3 decoder blocks of width 128):

1. ``policy.act(obs, temperature=1.0)`` under `torch.inference_mode` at batch B = 1, 16 and 64, with
   ``decoding="parallel"`` (all 56 tokens in one pass) and ``decoding="autoregressive"`` (56 one-token
   steps over a KV cache). ``obs`` is what a batched env returns: ``observation.images.agentview`` and
   ``observation.images.wrist`` uint8 ``[B, 128, 128, 3]`` (random), ``observation.state`` float32
   ``[B, 8]`` and ``task`` (B instructions drawn from 4 strings). Reported: the median latency of one
   call (ms), chunks/s = B / latency and actions/s = B x K / latency.
2. Where that time goes: ``policy.processor(obs)`` (resize, normalize, tokenize) and ``policy.encode``
   (the observation encoder) timed alone, and the decoder alone: ``act`` with the processor and the
   encoder replaced by their cached outputs (so it includes sampling and de-tokenization). The ``small``
   backbone's frozen text tower caches the embedding of each distinct instruction, so after warm-up its
   encoder cost is the image tower; this is also the case in rollouts.
3. The target ratio: parallel / autoregressive throughput of the 8 x 7 chunk at batch 16 (target >= 10x),
   per backbone, next to the same ratio for the decoder alone and the per-step cost of the 56
   autoregressive steps.
4. SFT training throughput (samples/s) at batch 64: one step as in `vla_rl.algos.sft.train_sft` (random
   frames of a 256-frame in-memory set, ``augment_images``, ``policy.logits(inputs, tokens)``,
   ``token_loss``, backward, gradient clipping, AdamW step), for ``tiny`` and ``small`` (frozen
   backbone, the default).

Each measurement runs a warm-up call, then up to ``--rounds`` samples of at least ``--sample-seconds``
each; no new round starts once ``--max-seconds`` have passed. Samples are interleaved (a round samples
every measurement once) so that load from other processes hits every configuration alike. On Linux each
sample records how many cores other processes kept busy meanwhile (``other``); the statistics use the
samples with other processes under 0.2 cores when there are any ("quiet"), else all of them. The
reported latency is the median of the calls in those samples (the best call is in the JSON too).

Shared machines: with torch's default of one thread per core and OpenMP's default (spinning) wait
policy, a neighbour process that keeps one core busy makes nearly every op wait for a scheduler slice
(several ms): the 56-step autoregressive decoder then runs about 10x slower. ``OMP_WAIT_POLICY=PASSIVE``
(or ``--threads 1``) avoids this; the JSON records the thread settings, and the ``other`` column says
how busy the machine was.

Run: ``python benchmarks/policy_latency.py`` (about 3 to 4 minutes on 2 CPU cores; ``--quick``: tiny
backbone, batch 1 and 16, one sample each, seconds). ``--device cuda`` runs the same on a GPU under bf16
autocast. Prints Markdown tables and writes ``benchmarks/results/policy_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import QUIET_CORES, code_version, machine_busy_s, wait_until_idle

from vla_rl.algos.sft import augment_images, token_loss
from vla_rl.policy.configuration_vla import VLAConfig
from vla_rl.policy.modeling_vla import VLAPolicy

DEFAULT_OUTPUT = Path(__file__).parent / "results" / "policy_latency.json"
DECODINGS = ("parallel", "autoregressive")
TASKS = (
    "pick up the red block",
    "push the blue block to the green target",
    "reach the yellow sphere",
    "stack the red block on the blue block",
)
CAMERA_RESOLUTION = 128  # env frames; the processor resizes them to config.image_size
SFT_FRAMES = 256
RATIO_TARGET = 10.0
THREAD_ENV = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")


@dataclass(frozen=True)
class Settings:
    """Sizes and repetitions of one run."""

    backbones: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    ratio_batch: int
    sft_batch: int
    rounds: int
    sample_seconds: float
    min_calls: int
    warmup_calls: int
    max_seconds: float  # no new round starts after this long (the first always runs)

    @classmethod
    def full(cls) -> Settings:
        return cls(("tiny", "small"), (1, 16, 64), 16, 64, 8, 0.2, 1, 1, 180.0)

    @classmethod
    def quick(cls) -> Settings:
        return cls(("tiny",), (1, 16), 16, 16, 1, 0.0, 1, 1, 0.0)


@dataclass
class Sample:
    """One repetition: the latency of each call (s) and the cores other processes used meanwhile."""

    latencies: list[float]
    other_cores: float | None


@dataclass
class Measurement:
    """A timed callable; ``group`` is ``act``, ``processor``, ``encoder``, ``decoder`` or ``sft``."""

    group: str
    backbone: str
    batch: int
    decoding: str | None
    call: Callable[[], None]
    samples: list[Sample] = field(default_factory=list)

    @property
    def key(self) -> str:
        return "/".join(str(part) for part in (self.group, self.backbone, self.batch, self.decoding) if part)

    def chosen(self) -> list[Sample]:
        """The quiet samples when there are any, else all."""
        quiet = [s for s in self.samples if s.other_cores is not None and s.other_cores < QUIET_CORES]
        return quiet or self.samples

    def median_s(self) -> float:
        return statistics.median(t for s in self.chosen() for t in s.latencies)

    def best_s(self) -> float:
        return min(t for s in self.samples for t in s.latencies)

    def other_cores(self) -> float | None:
        values = [s.other_cores for s in self.chosen() if s.other_cores is not None]
        return statistics.mean(values) if values else None


# ----------------------------------------------------------------------------------------------------
# Timing and machine load


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def take_sample(measurement: Measurement, settings: Settings, device: torch.device) -> Sample:
    """Call ``measurement`` ``settings.min_calls`` times and for ``settings.sample_seconds`` at least.

    Also notes how many cores other processes kept busy meanwhile (Linux only).
    """
    try:
        machine_start = machine_busy_s()
    except (OSError, ValueError, IndexError):
        machine_start = None
    own_start, start = time.process_time(), time.perf_counter()
    latencies: list[float] = []
    while len(latencies) < settings.min_calls or time.perf_counter() - start < settings.sample_seconds:
        synchronize(device)
        begin = time.perf_counter()
        measurement.call()
        synchronize(device)
        latencies.append(time.perf_counter() - begin)
    elapsed = time.perf_counter() - start
    other = None
    if machine_start is not None:
        busy = machine_busy_s() - machine_start - (time.process_time() - own_start)
        other = max(busy, 0.0) / elapsed
    return Sample(latencies, other)


# ----------------------------------------------------------------------------------------------------
# Inputs


def make_observation(batch: int, seed: int = 0) -> dict[str, Any]:
    """A batched env observation (LeRobot keys) with random images and state."""
    rng = np.random.default_rng(seed)
    shape = (batch, CAMERA_RESOLUTION, CAMERA_RESOLUTION, 3)
    return {
        "observation.images.agentview": rng.integers(0, 256, shape, dtype=np.uint8),
        "observation.images.wrist": rng.integers(0, 256, shape, dtype=np.uint8),
        "observation.state": rng.standard_normal((batch, 8)).astype(np.float32),
        "task": [TASKS[i % len(TASKS)] for i in range(batch)],
    }


def build_policy(backbone: str, decoding: str, device: torch.device) -> VLAPolicy:
    return VLAPolicy(VLAConfig(backbone=backbone, decoding=decoding)).to(device)


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA, a no-op elsewhere (CPU runs in float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


class CachedProcessor:
    """Stands in for `VLAProcessor`: returns fixed inputs, delegates everything else."""

    def __init__(self, processor: Any, inputs: dict[str, torch.Tensor]) -> None:
        self.processor = processor
        self.inputs = inputs

    def __call__(self, observation: dict[str, Any], device: Any = None) -> dict[str, torch.Tensor]:
        return self.inputs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.processor, name)


@contextmanager
def cached_front_end(
    policy: VLAPolicy, inputs: dict[str, torch.Tensor], tokens: torch.Tensor
) -> Iterator[None]:
    """Within the block, ``policy.act`` skips the processor and the encoder (their outputs are given)."""
    processor = policy.processor
    policy.processor = CachedProcessor(processor, inputs)  # type: ignore[assignment]
    policy.encode = lambda _: tokens  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        policy.processor = processor
        del policy.encode


# ----------------------------------------------------------------------------------------------------
# Measurements


def act_measurements(
    policies: dict[str, VLAPolicy], backbone: str, batch: int, device: torch.device
) -> list[Measurement]:
    """Full ``act`` per decoding, its decoder alone, and the processor and encoder shared by both."""
    observation = make_observation(batch)
    reference = policies[DECODINGS[0]]
    with torch.inference_mode(), autocast(device):
        inputs = reference.processor(observation, device)
        tokens = {d: p.encode(inputs) for d, p in policies.items()}

    def act(policy: VLAPolicy) -> Callable[[], None]:
        def call() -> None:
            with torch.inference_mode(), autocast(device):
                policy.act(observation, temperature=1.0)

        return call

    def decoder(policy: VLAPolicy, observation_tokens: torch.Tensor) -> Callable[[], None]:
        def call() -> None:
            with (
                torch.inference_mode(),
                autocast(device),
                cached_front_end(policy, inputs, observation_tokens),
            ):
                policy.act(observation, temperature=1.0)

        return call

    def processor() -> None:
        with torch.inference_mode():
            reference.processor(observation, device)

    def encoder() -> None:
        with torch.inference_mode(), autocast(device):
            reference.encode(inputs)

    measurements = [
        Measurement("processor", backbone, batch, None, processor),
        Measurement("encoder", backbone, batch, None, encoder),
    ]
    for decoding, policy in policies.items():
        measurements.append(Measurement("act", backbone, batch, decoding, act(policy)))
        measurements.append(
            Measurement("decoder", backbone, batch, decoding, decoder(policy, tokens[decoding]))
        )
    return measurements


def sft_measurement(backbone: str, batch: int, device: torch.device) -> tuple[Measurement, int]:
    """One SFT optimizer step on random frames, as `train_sft` does it; also the trainable parameter count."""
    policy = build_policy(backbone, "parallel", device)
    policy.train()
    config = policy.config
    generator = torch.Generator().manual_seed(0)
    shape = (SFT_FRAMES, len(config.cameras), 3, config.image_size, config.image_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    state = torch.randn(SFT_FRAMES, config.state_dim, generator=generator)
    state = (state - policy.processor.state_mean) / policy.processor.state_std
    text_ids, text_mask = policy.processor.tokenize([TASKS[i % len(TASKS)] for i in range(SFT_FRAMES)])
    targets = torch.randint(0, config.num_bins, (SFT_FRAMES, config.tokens_per_chunk), generator=generator)
    token_mask = torch.ones_like(targets, dtype=torch.bool)
    parameters = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=3e-4, weight_decay=0.01)

    def step() -> None:
        index = torch.randint(SFT_FRAMES, (batch,), generator=generator)
        inputs = {
            "images": augment_images(images[index].float() / 255.0, generator).to(device),
            "state": state[index].to(device),
            "text_ids": text_ids[index].to(device),
            "text_mask": text_mask[index].to(device),
        }
        tokens = targets[index].to(device)
        with autocast(device):
            logits = policy.logits(inputs, tokens)
        loss, _ = token_loss(logits, tokens, token_mask[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()

    return Measurement("sft", backbone, batch, None, step), sum(p.numel() for p in parameters)


# ----------------------------------------------------------------------------------------------------
# Results


def act_rows(measurements: list[Measurement], chunk_size: int, tokens: int) -> list[dict[str, Any]]:
    """One row per (backbone, batch, decoding): act latency, throughput and the time breakdown."""
    by_key = {m.key: m for m in measurements}
    rows = []
    for m in measurements:
        if m.group != "act":
            continue
        shared = f"{m.backbone}/{m.batch}"
        latency = m.median_s()
        rows.append(
            {
                "backbone": m.backbone,
                "batch": m.batch,
                "decoding": m.decoding,
                "act_ms": 1e3 * latency,
                "act_best_ms": 1e3 * m.best_s(),
                "chunks_per_s": m.batch / latency,
                "actions_per_s": m.batch * chunk_size / latency,
                "processor_ms": 1e3 * by_key[f"processor/{shared}"].median_s(),
                "encoder_ms": 1e3 * by_key[f"encoder/{shared}"].median_s(),
                "decoder_ms": 1e3 * by_key[f"decoder/{shared}/{m.decoding}"].median_s(),
                "decoder_ms_per_token": 1e3 * by_key[f"decoder/{shared}/{m.decoding}"].median_s() / tokens,
                "other_cores": m.other_cores(),
                "samples": len(m.samples),
                "quiet_samples": len(
                    [s for s in m.samples if s.other_cores is not None and s.other_cores < QUIET_CORES]
                ),
            }
        )
    return rows


def ratio_rows(rows: list[dict[str, Any]], batch: int, tokens_per_chunk: int) -> list[dict[str, Any]]:
    """Parallel / autoregressive throughput at ``batch`` per backbone, with where the AR time goes."""
    result = []
    for backbone in dict.fromkeys(row["backbone"] for row in rows):
        pick = {r["decoding"]: r for r in rows if r["backbone"] == backbone and r["batch"] == batch}
        if set(pick) != set(DECODINGS):
            continue
        par, ar = pick["parallel"], pick["autoregressive"]
        front_end = par["processor_ms"] + par["encoder_ms"]
        ratio = par["actions_per_s"] / ar["actions_per_s"]
        result.append(
            {
                "backbone": backbone,
                "batch": batch,
                "parallel_actions_per_s": par["actions_per_s"],
                "autoregressive_actions_per_s": ar["actions_per_s"],
                "ratio": ratio,
                "target": RATIO_TARGET,
                "met": ratio >= RATIO_TARGET,
                "decoder_ratio": ar["decoder_ms"] / par["decoder_ms"],
                "front_end_ms": front_end,
                "parallel_decoder_ms": par["decoder_ms"],
                "autoregressive_decoder_ms": ar["decoder_ms"],
                "autoregressive_ms_per_token_step": ar["decoder_ms"] / tokens_per_chunk,
                "front_end_share_of_parallel_act": front_end / par["act_ms"],
            }
        )
    return result


def sft_rows(measurements: list[Measurement], parameters: dict[str, int]) -> list[dict[str, Any]]:
    return [
        {
            "backbone": m.backbone,
            "batch": m.batch,
            "trainable_parameters": parameters[m.backbone],
            "step_ms": 1e3 * m.median_s(),
            "step_best_ms": 1e3 * m.best_s(),
            "samples_per_s": m.batch / m.median_s(),
            "other_cores": m.other_cores(),
        }
        for m in measurements
        if m.group == "sft"
    ]


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(
    act: list[dict[str, Any]], ratios: list[dict[str, Any]], sft: list[dict[str, Any]], meta: dict[str, Any]
) -> str:
    machine = meta["machine"]
    lines = [
        f"`act` on {machine['device_name']}, torch {machine['torch']}, {machine['torch_threads']} threads, "
        f"{'bf16 autocast' if machine['device'] == 'cuda' else 'float32'}; median of the calls in "
        f"{meta['rounds_done']} interleaved samples (quiet ones when any), OMP_WAIT_POLICY="
        f"{machine['env']['OMP_WAIT_POLICY'] or 'unset'}. Load average "
        f"{machine['load_average_before'][0]:.2f} before, {machine['load_average_after'][0]:.2f} after; "
        "'other': cores other processes kept busy during the samples used.",
        "",
        "| Backbone | Batch | Decoding | act ms | chunks/s | actions/s | processor ms | encoder ms "
        "| decoder ms | other |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in act:
        lines.append(
            f"| {r['backbone']} | {r['batch']} | {r['decoding']} | {fmt(r['act_ms'])} | "
            f"{fmt(r['chunks_per_s'])} | {fmt(r['actions_per_s'], 0)} | {fmt(r['processor_ms'])} | "
            f"{fmt(r['encoder_ms'])} | {fmt(r['decoder_ms'])} | {fmt(r['other_cores'], 2)} |"
        )
    lines += [
        "",
        "| Backbone | Batch | Parallel actions/s | AR actions/s | Ratio | Target | Met | Decoder-only ratio "
        "| AR decoder ms / token | Processor + encoder ms |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in ratios:
        lines.append(
            f"| {r['backbone']} | {r['batch']} | {fmt(r['parallel_actions_per_s'], 0)} | "
            f"{fmt(r['autoregressive_actions_per_s'], 0)} | {r['ratio']:.1f}x | >= {r['target']:g}x | "
            f"{'yes' if r['met'] else '**no**'} | {r['decoder_ratio']:.1f}x | "
            f"{r['autoregressive_ms_per_token_step']:.2f} | {fmt(r['front_end_ms'])} |"
        )
    lines += [
        "",
        "| SFT backbone | Batch | Trainable params | Step ms | Samples/s | other |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in sft:
        lines.append(
            f"| {r['backbone']} | {r['batch']} | {r['trainable_parameters']:,} | {fmt(r['step_ms'])} | "
            f"{fmt(r['samples_per_s'])} | {fmt(r['other_cores'], 2)} |"
        )
    return "\n".join(lines)


def verdict(ratios: list[dict[str, Any]]) -> str:
    lines = []
    for r in ratios:
        state = "met" if r["met"] else "NOT met"
        lines.append(
            f"{r['backbone']}: parallel / autoregressive = {r['ratio']:.1f}x at batch {r['batch']} "
            f"(target >= {r['target']:g}x: {state}); decoder alone {r['decoder_ratio']:.1f}x; processor + "
            f"encoder {r['front_end_ms']:.1f} ms = {100 * r['front_end_share_of_parallel_act']:.0f}% of a "
            f"parallel act."
        )
    return "\n".join(lines)


def machine_info(device: torch.device, load_before: tuple[float, ...]) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    return {
        "device": device.type,
        "device_name": f"{os.cpu_count()}-core CPU" if device.type == "cpu" else name,
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "env": {name: os.environ.get(name) for name in THREAD_ENV},
    }


# ----------------------------------------------------------------------------------------------------
# Main


def build_measurements(settings: Settings, device: torch.device) -> tuple[list[Measurement], dict[str, Any]]:
    """Every measurement of the run, and the build times and parameter counts."""
    measurements: list[Measurement] = []
    info: dict[str, Any] = {"build_seconds": {}, "parameters": {}, "sft_trainable_parameters": {}}
    for backbone in settings.backbones:
        start = time.perf_counter()
        policies = {d: build_policy(backbone, d, device).eval() for d in DECODINGS}
        info["build_seconds"][backbone] = (time.perf_counter() - start) / len(DECODINGS)
        info["parameters"][backbone] = policies[DECODINGS[0]].num_parameters()
        for batch in settings.batch_sizes:
            measurements += act_measurements(policies, backbone, batch, device)
        sft, trainable = sft_measurement(backbone, settings.sft_batch, device)
        info["sft_trainable_parameters"][backbone] = trainable
        measurements.append(sft)
    return measurements, info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny backbone, batch 1 and 16, few repetitions")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast)")
    parser.add_argument("--rounds", type=int, help="interleaved samples per measurement")
    parser.add_argument("--sample-seconds", type=float, help="minimum duration of one sample")
    parser.add_argument("--max-seconds", type=float, help="start no new round after this long")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each round, wait up to this long for other processes to leave the cores idle",
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core)")
    parser.add_argument(
        "--backbones", nargs="+", choices=["tiny", "small"], help="backbones to measure (default: both)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results path")
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings.full()
    if args.rounds is not None:
        settings = replace(settings, rounds=args.rounds)
    if args.sample_seconds is not None:
        settings = replace(settings, sample_seconds=args.sample_seconds)
    if args.max_seconds is not None:
        settings = replace(settings, max_seconds=args.max_seconds)
    if args.backbones is not None:
        settings = replace(settings, backbones=tuple(args.backbones))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    started, load_before = time.perf_counter(), os.getloadavg()
    measurements, info = build_measurements(settings, device)
    setup_s = time.perf_counter() - started
    for m in measurements:
        for _ in range(settings.warmup_calls):
            m.call()
    rounds_done = 0
    while rounds_done < settings.rounds and (
        rounds_done == 0 or time.perf_counter() - started < settings.max_seconds
    ):
        wait_until_idle(args.wait_idle)
        for m in measurements:
            m.samples.append(take_sample(m, settings, device))
        rounds_done += 1
        print(f"round {rounds_done}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    config = VLAConfig()
    act = act_rows(measurements, config.chunk_size, config.tokens_per_chunk)
    ratios = ratio_rows(act, settings.ratio_batch, config.tokens_per_chunk)
    sft = sft_rows(measurements, info.pop("sft_trainable_parameters"))
    meta = {
        "quick": args.quick,
        "settings": asdict(settings),
        "rounds_done": rounds_done,
        "machine": machine_info(device, load_before),
        "code": code_version("vla_rl"),
        "chunk": {"chunk_size": config.chunk_size, "action_dim": config.action_dim},
        **info,
        "setup_seconds": setup_s,
        "total_seconds": time.perf_counter() - started,
    }
    print(markdown(act, ratios, sft, meta))
    print()
    print(verdict(ratios))
    samples = {
        m.key: {
            "latencies_ms": [[1e3 * t for t in s.latencies] for s in m.samples],
            "other_cores": [s.other_cores for s in m.samples],
        }
        for m in measurements
    }
    report = {**meta, "act": act, "ratios": ratios, "sft": sft, "samples": samples}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output} ({meta['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
