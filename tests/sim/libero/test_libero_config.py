"""LIBERO in the Hydra configs and `vla-rl-eval`: every suite's env option composes, bad values are refused,
and a saved policy is evaluated on LIBERO end to end (report, per-task success, video)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("libero", reason="LIBERO is an optional extra: pip install -e .[libero]")
from sim.libero.env import LiberoEnv
from sim.libero.suites import SUITES, task_names

pytestmark = pytest.mark.timeout(1800)  # LIBERO envs take 5-15 s to build, minutes on a starved machine


def _compose(overrides: list[str]) -> object:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from vla_rl.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return OmegaConf.to_object(compose(config_name="eval", overrides=overrides))


@pytest.mark.parametrize("suite", SUITES)
def test_every_suite_has_an_env_option(suite: str) -> None:
    from vla_rl.config import EvalRunConfig, LiberoEnvConfig

    config = _compose([f"env={suite}"])
    assert isinstance(config, EvalRunConfig) and isinstance(config.env, LiberoEnvConfig)
    assert config.env.name == suite and config.env.cameras == ["agentview", "wrist"]
    assert config.env.render_size == 256 and config.env.task_names() == list(task_names(suite))
    # Every keyword the config produces is a parameter of the env class.
    parameters = inspect.signature(LiberoEnv.__init__).parameters
    assert set(config.env.env_kwargs()) <= set(parameters)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("env.tasks=[fly]", "env.tasks='fly' is not valid; choose one of: pick_up_the_black_bowl"),
        ("env.cameras=[frontview]", "env.cameras='frontview' is not valid; choose one of: agentview, wrist"),
        ("env.num_workers=3", "env.num_workers=3 must be >= 1 and divide env.num_envs=10"),
        ("env.render_size=8", "env.render_size must be within [16, 1024]"),
    ],
)
def test_bad_libero_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(Exception) as error:
        _compose(["env=libero_spatial", override])
    assert message in str(error.value)


@pytest.mark.slow
def test_eval_runs_a_saved_policy_on_libero(tmp_path: Path) -> None:
    import torch

    from vla_rl.policy.configuration_vla import VLAConfig
    from vla_rl.policy.modeling_vla import VLAPolicy

    torch.manual_seed(0)
    VLAPolicy(
        VLAConfig(image_size=32, hidden_dim=32, num_layers=1, num_heads=2, cameras=["agentview"])
    ).save_pretrained(tmp_path / "p")
    task = task_names("libero_spatial")[0]  # the shortest episodes: 220 steps
    environment = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "eval.log"  # a file, not a pipe: a killed run's worker cannot keep it open
    with log.open("w") as output:
        completed = subprocess.run(
            [
                str(Path(sys.executable).parent / "vla-rl-eval"),
                "env=libero_spatial",
                f"policy.path={tmp_path / 'p'}",
                f"env.tasks=[{task}]",
                "env.num_envs=1",
                "env.image_size=32",
                "env.render_size=32",
                "env.cameras=[agentview]",
                "eval.episodes_per_task=1",
                "eval.videos=1",
                f"run_dir={tmp_path / 'eval'}",
            ],
            cwd=tmp_path,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=1800,
        )
    assert completed.returncode == 0, log.read_text()[-3000:]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    result_by_label = report["results"]["policy"]
    assert set(result_by_label["success_by_task"]) == {task}
    assert result_by_label["episodes_by_task"] == {task: 1}
    assert len(list((tmp_path / "eval" / "videos").glob("*.mp4"))) == 1
