"""`vla-rl-train`: the training pipeline, stage by stage, in one run directory.

Stages: (1) scripted-expert demonstrations as a LeRobotDataset (collected once, reused);
(2) supervised fine-tuning on ``sft.episodes_per_task`` demonstrations per task, then its evaluation;
(3) the world model behind the ``srpo`` reward (trained on the demonstrations' videos, or loaded);
(4) GRPO for ``rl.steps`` steps with the ``reward.name`` reward, evaluated every ``rl.eval_every`` steps;
(5) the report: success per task before and after RL, and of the scripted experts, on the ``eval``
initial states (never trained on).
Outputs under ``run_dir``: ``sft_policy/`` and ``policy/`` (safetensors + JSON), ``world_model/``,
``checkpoints/``, ``metrics.csv`` + TensorBoard, ``success.png``, ``success_vs_step.png``,
``videos/*.mp4``, ``report.md`` / ``report.json``. A finished stage is skipped and an interrupted one
resumes from its last checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from sim.core import BatchedEnv
from vla_rl.algos.grpo import train_grpo
from vla_rl.algos.sft import train_sft
from vla_rl.cli import CONFIG_DIR, log, summarize, to_config
from vla_rl.config import TrainConfig
from vla_rl.data.demos import collect_demonstrations
from vla_rl.data.frames import load_frames, resize_video
from vla_rl.data.rollouts import collect_trajectories
from vla_rl.envs import make_env
from vla_rl.evaluation import EvalResult, evaluate, plot_metric, plot_success, write_report
from vla_rl.io import write_json_atomic
from vla_rl.metrics import MetricsLogger
from vla_rl.policy.actor import ChunkActor
from vla_rl.policy.factory import build_policy
from vla_rl.policy.modeling_vla import VLAPolicy
from vla_rl.rewards import build_reward
from vla_rl.rewards.base import RewardModel
from vla_rl.world_model.base import ClipEncoder
from vla_rl.world_model.jepa import WorldModel
from vla_rl.world_model.training import train_world_model

SFT_POLICY, RL_POLICY, WORLD_MODEL = "sft_policy", "policy", "world_model"


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    """Run the pipeline."""
    config = to_config(cfg, TrainConfig)
    run_dir = Path(config.run_dir)
    log.info("run directory %s\n%s", run_dir, summarize(config))
    env = make_env(config.env)
    metrics = MetricsLogger(run_dir)
    try:
        Pipeline(config, env, metrics).run()
    finally:
        metrics.close()
        env.close()


class Pipeline:
    """The stages of `vla-rl-train` over one env, one metrics sink and one run directory."""

    def __init__(self, config: TrainConfig, env: BatchedEnv, metrics: MetricsLogger) -> None:
        self.config = config
        self.env = env
        self.metrics = metrics
        self.run_dir = Path(config.run_dir)
        self.tasks = config.env.task_names()

    def run(self) -> None:
        """All stages; each skips itself when its output exists."""
        config, run_dir = self.config, self.run_dir
        demos = self.demonstrations()
        policy = self.supervised(demos)
        temperature = config.eval.temperature
        before = self.evaluation(policy, "eval_sft.json", config.rl.steps == 0, temperature)
        log.info("stage 2/5: SFT policy %.1f%% on eval states", 100 * before.mean_success)
        results: dict[str, EvalResult] = {"SFT policy": before}
        if temperature > 0:  # the greedy decoding beside the sampled one
            results["SFT policy, greedy"] = self.evaluation(policy, "eval_sft_greedy.json", False, 0.0)
        if config.rl.steps > 0:
            self.metrics.log(0, {"eval/success_rate": before.mean_success})
            reward = self.reward(demos, policy)
            policy, after = self.reinforce(policy, reward)
            results["after RL"] = after
            log.info("stage 4/5: RL policy %.1f%% on eval states", 100 * after.mean_success)
            if temperature > 0:
                results["after RL, greedy"] = self.evaluation(policy, "eval_rl_greedy.json", False, 0.0)
        expert = evaluate(
            self.env,
            lambda obs: self.env.expert_action(),
            self.tasks,
            config.eval.episodes_per_task,
            progress="expert",
        )
        results["scripted expert"] = expert
        training = (
            f"Demonstrations: `{demos}`; SFT on {config.sft.episodes_per_task or 'all'} per task, "
            f"{config.sft.steps} steps"
        )
        if config.rl.steps > 0:
            training += (
                f"; then {config.rl.steps} GRPO steps with the `{config.reward.name}` reward "
                f"({config.rl.groups_per_step} groups x {config.rl.group_size} rollouts per step)"
            )
        notes = [
            training + ".",
            f"Evaluation: {config.eval.episodes_per_task} eval initial states per task, "
            + (
                f"actions sampled at temperature {temperature:g} (seed {config.eval.seed}); "
                "greedy decoding beside it."
                if temperature > 0
                else "greedy decoding."
            ),
        ]
        write_report(run_dir, "vla-rl-train report", results, notes)
        plot_success(run_dir / "success.png", results)
        if config.rl.steps > 0:
            plot_metric(
                run_dir / "success_vs_step.png", self.metrics.csv_path, "eval/success_rate", "RL step"
            )
        else:
            plot_metric(
                run_dir / "success_vs_step.png", self.metrics.csv_path, "sft/eval_success_rate", "SFT step"
            )
        log.info("stage 5/5: report %s", run_dir / "report.md")

    # ------------------------------------------------------------------------------------------------

    def demonstrations(self) -> Path:
        """Stage 1: the scripted-expert demonstrations' dataset (collected when absent)."""
        self.env.reset(seed=self.config.seed)
        demos = collect_demonstrations(
            self.env, self.config.demos, self.tasks, int(self.env.metadata["render_fps"])
        )
        log.info("stage 1/5: demonstrations in %s", demos)
        return demos

    def supervised(self, demos: Path) -> VLAPolicy:
        """Stage 2: the SFT policy (trained, or loaded when ``sft_policy/`` exists)."""
        config, directory = self.config, self.run_dir / SFT_POLICY
        if directory.exists():
            log.info("stage 2/5: SFT already done, loaded %s", directory)
            return VLAPolicy.from_pretrained(directory)
        frames = load_frames(
            demos,
            config.demos.repo_id,
            list(config.env.cameras),
            config.policy.image_size,
            config.policy.chunk_size,
            config.sft.episodes_per_task,
        )
        torch.manual_seed(config.seed)  # the initial weights: a rerun of the stage starts from the same ones
        policy = build_policy(config.policy, frames, list(config.env.cameras), self.env.single_action_space)
        log.info(
            "stage 2/5: SFT of a %.1fM-parameter policy on %d frames",
            policy.num_parameters() / 1e6,
            len(frames),
        )

        def periodic_eval(current: VLAPolicy, step: int) -> float:
            result = self._evaluate(
                current, config.sft.eval_episodes_per_task, False, config.eval.temperature
            )
            log.info("SFT step %d: eval success %.1f%%", step, 100 * result.mean_success)
            return result.mean_success

        policy = train_sft(policy, frames, config.sft, self.run_dir, self.metrics, periodic_eval)
        policy.save_pretrained(directory)
        return policy

    def reward(self, demos: Path, policy: VLAPolicy) -> RewardModel:
        """Stage 3: the reward model (with its world model for ``srpo``)."""
        config = self.config
        encoder = self.world_model(demos, policy) if config.reward.name == "srpo" else None
        log.info("stage 3/5: reward %s", config.reward.name)
        return build_reward(config.reward.name, encoder, config.reward.srpo)

    def world_model(self, demos: Path, policy: VLAPolicy) -> ClipEncoder:
        """The clip encoder of the ``srpo`` reward: V-JEPA 2, a saved model, or one trained here.

        A trained one learns from the demonstrations' videos and ``world_model.policy_rollouts`` rollouts
        of ``policy`` (the SFT policy) per task.
        """
        stage, directory = self.config.world_model, self.run_dir / WORLD_MODEL
        if stage.kind == "vjepa2":
            from vla_rl.world_model.vjepa2 import VJEPA2ClipEncoder

            return VJEPA2ClipEncoder(str(stage.path))
        if stage.path is not None or directory.exists():
            path = Path(stage.path) if stage.path is not None else directory
            log.info("stage 3/5: world model loaded from %s", path)
            return WorldModel.from_pretrained(path)
        camera = self.config.world_model_camera()
        frames = load_frames(demos, self.config.demos.repo_id, [camera], stage.model.image_size, 1, None)
        episodes = [
            frames.images[frames.episode == index, 0].permute(0, 2, 3, 1).numpy()
            for index in frames.episode.unique().tolist()
        ]
        if stage.policy_rollouts:
            episodes += self._rollout_videos(policy, stage.policy_rollouts, stage.model.image_size)
        log.info(
            "stage 3/5: training the world model on %d demonstration and %d SFT-policy videos",
            frames.episode.unique().numel(),
            stage.policy_rollouts * len(self.tasks),
        )
        torch.manual_seed(self.config.seed)
        model = WorldModel(stage.model)
        losses = train_world_model(model, episodes, stage.train)
        for step in range(0, len(losses), 50):
            self.metrics.log(step + 1, {"world_model/loss": losses[step]})
        model.save_pretrained(directory)
        return model

    def _rollout_videos(self, policy: VLAPolicy, per_task: int, image_size: int) -> list[np.ndarray]:
        """Videos of ``policy``'s failures and successes, for the world model to learn from.

        ``per_task`` rollouts at temperature 1 from the first ``train`` initial states of each task ->
        their world-model camera's frames, uint8 ``[T, image_size, image_size, 3]`` each.
        """
        trajectories = collect_trajectories(
            self.env,
            policy,
            [(task, state) for task in self.tasks for state in range(per_task)],
            "train",
            1.0,
            self._execute_steps(policy),
            self.config.world_model_camera(),
            {task: index for index, task in enumerate(self.tasks)},
            progress="world-model rollouts",
        )
        log.info(
            "stage 3/5: %d of %d SFT-policy rollouts succeeded",
            sum(t.success for t in trajectories),
            len(trajectories),
        )
        return [resize_video(t.frames, image_size) for t in trajectories]

    def reinforce(self, policy: VLAPolicy, reward: RewardModel) -> tuple[VLAPolicy, EvalResult]:
        """Stage 4: GRPO from the SFT policy; returns the RL policy and its final evaluation."""
        config, directory = self.config, self.run_dir / RL_POLICY
        if directory.exists():
            log.info("stage 4/5: RL already done, loaded %s", directory)
            policy = VLAPolicy.from_pretrained(directory)
            return policy, self.evaluation(policy, "eval_rl.json", True, config.eval.temperature)
        final: dict[str, EvalResult] = {}

        def periodic_eval(current: VLAPolicy, step: int) -> float:
            last = step == config.rl.steps
            result = self._evaluate(current, config.eval.episodes_per_task, last, config.eval.temperature)
            log.info("RL step %d: eval success %.1f%%", step, 100 * result.mean_success)
            if last:
                final["result"] = result
            return result.mean_success

        instructions = {task: self.env.task_specs[task].instruction for task in self.tasks}
        num_train_states = min(self.env.task_specs[task].num_train_states for task in self.tasks)
        execute_steps = self._execute_steps(policy)
        policy = train_grpo(
            policy,
            self.env,
            reward,
            self.tasks,
            instructions,
            num_train_states,
            execute_steps,
            config.world_model_camera(),
            config.rl,
            self.run_dir,
            self.metrics,
            periodic_eval,
        )
        policy.save_pretrained(directory)

        self._write_evaluation(self.run_dir / "eval_rl.json", final["result"], config.eval.temperature)
        return policy, final["result"]

    def _execute_steps(self, policy: VLAPolicy) -> int:
        """Actions of each chunk executed before re-planning: ``policy.execute_steps``, else all K."""
        return self.config.policy.execute_steps or policy.config.chunk_size

    # ------------------------------------------------------------------------------------------------

    def evaluation(self, policy: VLAPolicy, name: str, videos: bool, temperature: float) -> EvalResult:
        """A full evaluation of ``policy`` decoded at ``temperature``, cached in ``run_dir/name`` (JSON).

        A cached result of another decoding (files without one are greedy) is evaluated again.
        """
        path = self.run_dir / name
        if path.exists():
            cached = json.loads(path.read_text())
            if cached.get("temperature", 0.0) == temperature:
                return EvalResult.from_dict(cached)
            log.info(
                "%s was decoded at temperature %s, not %s: evaluating again",
                path,
                cached.get("temperature", 0.0),
                temperature,
            )
        result = self._evaluate(policy, self.config.eval.episodes_per_task, videos, temperature)
        self._write_evaluation(path, result, temperature)
        return result

    @staticmethod
    def _write_evaluation(path: Path, result: EvalResult, temperature: float) -> None:
        write_json_atomic(path, {**result.as_dict(), "temperature": temperature})

    def _evaluate(
        self, policy: VLAPolicy, episodes_per_task: int, videos: bool, temperature: float
    ) -> EvalResult:
        """Success on the first ``episodes_per_task`` eval initial states of each task.

        Decoded at ``temperature`` (0 is greedy), sampled with the generator seeded by ``eval.seed``:
        every evaluation of the same policy draws the same actions.
        """
        was_training = policy.training
        policy.eval()
        actor = ChunkActor(policy, temperature, self.config.policy.execute_steps, self.config.eval.seed)
        result = evaluate(
            self.env,
            actor,
            self.tasks,
            episodes_per_task,
            self.config.eval.videos if videos else 0,
            self.run_dir / "videos",
            actor.reset,
            progress=None,
        )
        policy.train(was_training)
        return result


if __name__ == "__main__":  # `python -m vla_rl.cli.train`: benchmarks start arms this way
    main()
