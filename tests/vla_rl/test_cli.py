"""End-to-end runs of the console scripts on tiny settings, and their errors on bad configs."""

import csv
import json
import os
import subprocess
import sys
import time
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
    # A dataset without the tasks asked for is not silently reused.
    other = run("vla-rl-collect", "env.tasks=[reach_target]", f"demos.root={root}", cwd=tmp_path)
    assert other.returncode != 0 and "have no episodes of ['reach_target']" in other.stderr
    # Nor one recorded in another action space.
    so101 = run("vla-rl-collect", "env=so101", "env.tasks=[push]", f"demos.root={root}", cwd=tmp_path)
    assert so101.returncode != 0 and "have actions of shape (7,), the env's are (6,)" in so101.stderr


def test_smoke_pipeline_runs_end_to_end_and_resumes_after_a_kill(tmp_path):
    overrides = ["experiment=smoke", f"demos.root={tmp_path / 'demos'}", f"run_dir={tmp_path / 'run'}"]
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoints" / "rl_last" / "trainer.json"
    # Kill the run (SIGKILL: no cleanup) as soon as the first RL checkpoint is on disk.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(tmp_path / "lerobot_home")}
    process = subprocess.Popen(
        [str(BIN / "vla-rl-train"), *overrides],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.kill()
    process.wait()
    assert checkpoint.exists(), "the run ended before its first RL checkpoint"
    killed_at = json.loads(checkpoint.read_text())["step"]
    assert 1 <= killed_at <= 3

    result = run("vla-rl-train", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "SFT already done" in output and "world model loaded" in output
    # The world model learned from the 2 demonstrations and 1 SFT-policy rollout of each task.
    assert "on 4 demonstration and 2 SFT-policy videos" in (run_dir / "train.log").read_text()
    assert f"resuming GRPO from step {killed_at}" in output or killed_at == 3
    report = json.loads((run_dir / "report.json").read_text())
    # Sampled at the rollout temperature (the train.yaml default), the greedy decoding beside it.
    assert "sampled at temperature 1 (seed 0)" in (run_dir / "report.md").read_text()
    for label in ("SFT policy", "SFT policy, greedy", "after RL", "after RL, greedy", "scripted expert"):
        assert report["results"][label]["episodes_by_task"] == {"reach_target": 2, "lift_block": 2}
    for name in ("policy", "sft_policy", "world_model"):
        assert (run_dir / name / "model.safetensors").exists()
    assert (run_dir / "success.png").stat().st_size > 1000
    assert (run_dir / "success_vs_step.png").stat().st_size > 1000
    assert len(list((run_dir / "videos").glob("*.mp4"))) == 2
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    # Every RL step logged once, with its timings; evaluations at steps 0 (the SFT policy) to 3.
    rl_steps = sorted({int(row["step"]) for row in rows if row["name"] == "rl/rollout_success_rate"})
    assert rl_steps == [1, 2, 3]
    eval_steps = sorted({int(row["step"]) for row in rows if row["name"] == "eval/success_rate"})
    assert eval_steps == [0, 1, 2, 3]
    assert {"rl/time_rollout_s", "rl/time_reward_s", "rl/time_update_s", "world_model/loss"} <= {
        row["name"] for row in rows
    }

    # Running again finds every stage done and only writes the report.
    again = run("vla-rl-train", *overrides, cwd=tmp_path)
    assert again.returncode == 0 and "RL already done" in again.stdout + again.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("bogus=1", "Key 'bogus' not in 'TrainConfig'"),
        ("env=car", "Available options in 'env'"),
        ("env.num_envs=abc", "could not be converted to Integer"),
        ("env.tasks=[fly]", "env.tasks='fly' is not valid; choose one of: reach_target"),
        ("env.cameras=[front]", "env.cameras='front' is not valid; choose one of: agentview, wrist"),
        ("env.name=car", "env.name='car' is not valid; choose one of: arm"),
        ("world_model.camera=wrist env.cameras=[agentview]", "world_model.camera='wrist' is not rendered"),
        ("demos.split=test", "demos.split='test' is not valid; choose one of: train, eval"),
        ("eval.episodes_per_task=0", "eval.episodes_per_task must be within [1, 50]"),
        ("eval.temperature=-1", "eval.temperature must be >= 0 (0 is greedy), got -1"),
        ("sft.environment_state_weight=-1", "sft.environment_state_weight must be >= 0, got -1"),
        ("env.num_threads=0", "env.num_threads must be >= 1, got 0"),
        ("env.render_workers=-1", "env.render_workers must be >= 0 (0: render in-process), got -1"),
    ],
)
def test_bad_configs_fail_with_a_message_naming_the_key(tmp_path, override, message):
    result = run("vla-rl-train", *override.split(), f"run_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout


@pytest.mark.parametrize(("env", "cameras"), [("arm", ["agentview", "wrist"]), ("so101", ["front", "wrist"])])
def test_every_env_group_option_composes_a_valid_train_config(env, cameras):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from vla_rl.cli import CONFIG_DIR
    from vla_rl.config import TrainConfig

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = OmegaConf.to_object(compose(config_name="train", overrides=[f"env={env}"]))
    assert isinstance(config, TrainConfig)
    assert config.env.name == env and config.env.cameras == cameras
    assert config.world_model_camera() == cameras[0]
    assert config.demos.root == f"data/demos/{env}"


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
