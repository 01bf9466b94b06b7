"""End-to-end runs of the console scripts on tiny settings, and their errors on bad configs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent


def run(script: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(cwd / "lerobot_home")}
    return subprocess.run(
        [str(BIN / script), *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_collect_writes_a_lerobot_dataset_that_lerobot_reads_back(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = tmp_path / "demos"
    result = run(
        "vla-rl-collect",
        "env.tasks=[lift_block,open_drawer]",
        "env.num_envs=4",
        "env.image_size=32",
        "demos.episodes_per_task=2",
        f"demos.root={root}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "demos.partial").exists()

    dataset = LeRobotDataset("vla_rl/arm_demos", root=root)
    assert dataset.num_episodes == 4
    assert set(dataset.meta.tasks.index) == {"pick up the red block", "open the drawer"}
    assert dataset.meta.info.codebase_version.startswith("v3")
    frame = dataset[0]
    assert frame["observation.images.agentview"].shape == (3, 32, 32)
    assert frame["observation.images.wrist"].shape == (3, 32, 32)
    assert frame["observation.state"].shape == (8,)
    assert frame["action"].shape == (7,)
    assert frame["task"] == "pick up the red block"
    actions = np.stack([dataset[i]["action"].numpy() for i in range(dataset.num_frames)])
    assert np.abs(actions).max() <= 1.0 and np.abs(actions).max() > 0.5
    # Every recorded episode is a success, flagged on its last frame only.
    for episode in range(dataset.num_episodes):
        start = dataset.meta.episodes["dataset_from_index"][episode]
        stop = dataset.meta.episodes["dataset_to_index"][episode]
        flags = [bool(dataset[i]["success"]) for i in range(start, stop)]
        assert flags[-1] and not any(flags[:-1])
        assert float(dataset[stop - 1]["reward"]) == 1.0

    # A second run keeps the existing dataset instead of recording it again.
    again = run("vla-rl-collect", "env.tasks=[lift_block]", f"demos.root={root}", cwd=tmp_path)
    assert again.returncode == 0 and "already at" in again.stdout + again.stderr


def test_train_runs_the_pipeline_and_writes_its_outputs(tmp_path):
    result = run(
        "vla-rl-train",
        "env.tasks=[reach_target,lift_block]",
        "env.num_envs=4",
        "env.image_size=32",
        "demos.episodes_per_task=1",
        "eval.episodes_per_task=2",
        "eval.videos=2",
        "algo.steps=4",
        "algo.batch_size=8",
        "algo.eval_every=2",
        "algo.eval_episodes_per_task=1",
        "policy.hidden_dim=32",
        "policy.num_layers=1",
        f"demos.root={tmp_path / 'demos'}",
        f"run_dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "run"
    report = json.loads((run_dir / "report.json").read_text())
    for label in ("SFT policy", "scripted expert"):
        assert report["results"][label]["episodes_by_task"] == {"reach_target": 2, "lift_block": 2}
    assert (run_dir / "policy" / "model.safetensors").exists()
    assert (run_dir / "success.png").stat().st_size > 1000
    assert (run_dir / "success_vs_step.png").stat().st_size > 1000
    assert len(list((run_dir / "videos").glob("*.mp4"))) == 2
    metrics = (run_dir / "metrics.csv").read_text()
    assert "eval/success_rate" in metrics and "loss/policy" in metrics

    # Running again finds the trained policy and only evaluates.
    again = run("vla-rl-train", *result.args[1:], cwd=tmp_path)
    assert again.returncode == 0 and "SFT already done" in again.stdout + again.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("bogus=1", "Key 'bogus' not in 'TrainConfig'"),
        ("env=car", "Available options in 'env'"),
        ("env.num_envs=abc", "could not be converted to Integer"),
        ("env.tasks=[fly]", "env.tasks='fly' is not valid; choose one of: reach_target"),
        ("env.cameras=[front]", "env.cameras='front' is not valid; choose one of: agentview, wrist"),
        ("demos.split=test", "demos.split='test' is not valid; choose one of: train, eval"),
        ("eval.episodes_per_task=0", "eval.episodes_per_task must be within [1, 50]"),
    ],
)
def test_bad_configs_fail_with_a_message_naming_the_key(tmp_path, override, message):
    result = run("vla-rl-train", override, f"run_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout


def test_eval_runs_a_saved_policy_and_requires_its_path(tmp_path):
    import torch

    from vla_rl.policy.configuration_vla import VLAConfig
    from vla_rl.policy.modeling_vla import VLAPolicy

    torch.manual_seed(0)
    VLAPolicy(VLAConfig(image_size=32, hidden_dim=32, num_layers=1, num_heads=2)).save_pretrained(
        tmp_path / "p"
    )
    result = run(
        "vla-rl-eval",
        "eval.policy=policy",
        f"policy.path={tmp_path / 'p'}",
        "env.tasks=[reach_target]",
        "env.num_envs=2",
        "env.image_size=32",
        "eval.episodes_per_task=2",
        "eval.videos=1",
        f"run_dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["results"]["policy"]["episodes_by_task"] == {"reach_target": 2}
    missing = run("vla-rl-eval", "eval.policy=policy", cwd=tmp_path)
    assert missing.returncode != 0 and "needs policy.path" in missing.stderr
