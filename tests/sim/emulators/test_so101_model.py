import mujoco
import numpy as np

from sim.mujoco.so101.model import (
    CAMERAS,
    MOTOR_IDS,
    MOTOR_NAMES,
    REST_KEYFRAME,
    TCP_SITE,
    So101Indices,
    load_model,
)


def test_motor_names_match_lerobot_so101_follower():
    from lerobot.robots.so_follower import SO101Follower, SO101FollowerConfig

    robot = SO101Follower(SO101FollowerConfig(port="/dev/null", id="names"))
    assert {name: motor.id for name, motor in robot.bus.motors.items()} == MOTOR_IDS
    assert tuple(robot.bus.motors) == MOTOR_NAMES


def test_model_has_the_arm_its_cameras_and_a_rest_pose_inside_the_joint_ranges():
    model = load_model()
    indices = So101Indices.from_model(model)
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key(REST_KEYFRAME).id)
    rest = data.qpos[indices.qpos]
    assert np.all(rest >= indices.joint_range[:, 0]) and np.all(rest <= indices.joint_range[:, 1])
    np.testing.assert_array_equal(model.actuator_ctrlrange[indices.actuator], indices.joint_range)
    mujoco.mj_forward(model, data)
    assert data.site(TCP_SITE).xpos[2] > 0.0  # parked above the table
    for camera in CAMERAS:
        assert model.camera(camera).id >= 0
    for name in ("table", "block", "target_zone"):
        assert model.geom(name).id >= 0


def test_zero_pose_reaches_forward_at_the_published_height():
    # At zero the upper arm stands up and forearm and gripper point forward: the TCP is ~0.39 m ahead of
    # the base and ~0.22 m above the table (the published model's gripper frame: x 0.391, z 0.227).
    model = load_model()
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    x, y, z = data.site(TCP_SITE).xpos
    assert abs(x - 0.39) < 0.02 and abs(y) < 1e-9 and abs(z - 0.22) < 0.02


def test_cameras_render_the_scene():
    model = load_model()
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    with mujoco.Renderer(model, 48, 64) as renderer:
        for camera in CAMERAS:
            renderer.update_scene(data, camera=camera)
            assert renderer.render().std() > 5, camera
