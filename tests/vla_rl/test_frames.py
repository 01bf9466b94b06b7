import numpy as np
import pytest

from sim.core import OBS_ENV_STATE
from sim.mujoco.arm.env import ArmBatchedEnv
from sim.mujoco.so101.env import So101BatchedEnv
from vla_rl.config import DemosConfig
from vla_rl.data.demos import collect_demonstrations, dataset_features, expert_episodes
from vla_rl.data.frames import frames_from_episodes, load_frames, resize_video


@pytest.fixture(scope="module")
def so101():
    env = So101BatchedEnv(
        num_envs=2,
        tasks=["pick_place"],
        cameras=["front"],
        image_size=32,
        render_workers=0,
        autoreset_mode="Disabled",
    )
    env.reset(seed=0)
    yield env
    env.close()


def test_the_environment_state_goes_from_the_simulator_through_the_dataset_to_the_frames(tmp_path, so101):
    config = DemosConfig(root=str(tmp_path / "demos"), repo_id="test/so101", episodes_per_task=1)
    root = collect_demonstrations(so101, config, ["pick_place"], fps=20)
    frames = load_frames(root, config.repo_id, ["front"], 32, 8)
    # What the simulator said, frame by frame: the expert's episode from the same first train state.
    recorded = frames_from_episodes(expert_episodes(so101, "pick_place", 1), ["front"], 32, 8)
    assert frames.environment_state is not None and recorded.environment_state is not None
    assert frames.environment_state.shape == (len(frames), 5)
    np.testing.assert_allclose(
        frames.environment_state.numpy(), recorded.environment_state.numpy(), atol=1e-6
    )
    # The block is carried to the zone: its recorded position moves by centimetres.
    travel = np.linalg.norm(frames.environment_state[-1, :2] - frames.environment_state[0, :2])
    assert travel > 0.05


def test_envs_without_an_environment_state_record_none():
    env = ArmBatchedEnv(
        num_envs=1,
        tasks=["close_drawer"],
        cameras=["agentview"],
        image_size=32,
        render_workers=0,
        autoreset_mode="Disabled",
    )
    try:
        assert OBS_ENV_STATE not in dataset_features(env, use_videos=False)
        env.reset(seed=0)
        frames = frames_from_episodes(expert_episodes(env, "close_drawer", 1), ["agentview"], 32, 8)
    finally:
        env.close()
    assert frames.environment_state is None


def _replay(env, episode):
    """The states ``[T, S]`` that executing an episode's recorded actions from its initial state visits."""
    obs, _ = env.reset(options={"split": "train", "init_state_ids": [episode.init_state_id]})
    states = []
    for action in episode.actions:
        states.append(obs["observation.state"][0].copy())
        obs, *_ = env.step(action[None])
    return np.stack(states)


def test_dart_demonstrations_record_the_experts_actions_not_the_noisy_ones_executed():
    env = So101BatchedEnv(
        num_envs=1, tasks=["pick_place"], cameras=(), autoreset_mode="Disabled", action_mode="ee"
    )
    try:
        env.reset(seed=0)
        (clean,) = expert_episodes(env, "pick_place", 1)
        (noisy,) = expert_episodes(env, "pick_place", 1, action_noise=0.1)
        recorded = {
            name: np.stack([obs["observation.state"] for obs in episode.observations])
            for name, episode in [("clean", clean), ("noisy", noisy)]
        }
        # Without noise the recorded actions are what was executed: they replay to the same states.
        np.testing.assert_allclose(_replay(env, clean), recorded["clean"], atol=1e-5)
        # With noise the states are off the expert's path, and the labels are not what drove the arm
        # there: replaying them takes it elsewhere (the expert's corrections without the noise).
        assert noisy.success and noisy.init_state_id == clean.init_state_id
        length = min(clean.length, noisy.length)
        assert np.abs(recorded["noisy"][:length] - recorded["clean"][:length]).max() > 0.02
        assert np.abs(_replay(env, noisy) - recorded["noisy"]).max() > 0.02
    finally:
        env.close()


def test_dart_noise_must_be_a_small_nonnegative_standard_deviation():
    with pytest.raises(ValueError, match="action_noise"):
        DemosConfig(action_noise=-0.1)
    with pytest.raises(ValueError, match="action_noise"):
        DemosConfig(action_noise=2.0)


def test_resize_video_keeps_uint8_frames_and_their_content():
    video = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    video[1] = 200
    video[2, :4] = 255  # top half white
    small = resize_video(video, 4)
    assert small.shape == (3, 4, 4, 3) and small.dtype == np.uint8
    assert (small[0] == 0).all() and (small[1] == 200).all()
    # Top row white, bottom row black (antialiasing blends the two middle rows).
    assert (small[2, 0] == 255).all() and (small[2, 3] == 0).all()
    assert resize_video(video, 8) is video
