"""Smoke test of benchmarks/policy_latency.py: a ``--quick`` run finishes and writes well-formed JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "policy_latency.py"


def test_quick_run_writes_json(tmp_path: Path) -> None:
    output = tmp_path / "policy_latency.json"
    # One torch thread: on a shared 2-core machine, two OpenMP threads stall for whole scheduler slices
    # whenever another process holds a core, which can make the run 5-10x slower.
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--output", str(output)],
        cwd=SCRIPT.parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "| Backbone | Batch | Decoding |" in completed.stdout
    assert "target >= 10x" in completed.stdout

    report = json.loads(output.read_text())
    assert report["quick"] is True
    assert {"settings", "machine", "code", "act", "ratios", "sft", "samples"} <= set(report)
    assert report["machine"]["torch_threads"] == 1

    act = {(row["backbone"], row["batch"], row["decoding"]) for row in report["act"]}
    assert act == {("tiny", b, d) for b in (1, 16) for d in ("parallel", "autoregressive")}
    for row in report["act"]:
        for key in ("act_ms", "chunks_per_s", "actions_per_s", "processor_ms", "encoder_ms", "decoder_ms"):
            assert row[key] > 0, (key, row)
        assert row["actions_per_s"] == pytest.approx(row["chunks_per_s"] * 8)  # chunk_size K = 8

    (ratio,) = report["ratios"]
    assert ratio["backbone"] == "tiny" and ratio["batch"] == 16
    assert ratio["ratio"] > 0 and ratio["target"] == 10 and isinstance(ratio["met"], bool)

    (sft,) = report["sft"]
    assert sft["backbone"] == "tiny" and sft["samples_per_s"] > 0 and sft["trainable_parameters"] > 0
