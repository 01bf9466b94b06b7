import numpy as np

from sim.mujoco.rotations import (
    axis_angle_to_mat,
    mat_to_axis_angle,
    quat_to_axis_angle,
    quat_to_mat,
    yaw_from_quat,
    yaw_quat,
)


def random_quats(n, seed=0):
    quat = np.random.default_rng(seed).normal(size=(n, 4))
    return quat / np.linalg.norm(quat, axis=1, keepdims=True)


def test_quat_to_mat_is_a_rotation():
    mats = quat_to_mat(random_quats(50))
    np.testing.assert_allclose(
        mats @ np.swapaxes(mats, 1, 2), np.broadcast_to(np.eye(3), (50, 3, 3)), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(mats), 1.0)


def test_axis_angle_from_quat_matches_the_matrix_route_and_handles_sign_and_identity():
    quats = np.concatenate([random_quats(200), [[1.0, 0, 0, 0], [-1.0, 0, 0, 0], [0.0, 0, 0, 1.0]]])
    expected = mat_to_axis_angle(quat_to_mat(quats))
    actual = quat_to_axis_angle(quats)
    # At exactly pi the axis sign is ambiguous; compare the rotations they describe.
    np.testing.assert_allclose(np.linalg.norm(actual, axis=1), np.linalg.norm(expected, axis=1), atol=1e-9)
    near_pi = np.linalg.norm(expected, axis=1) > np.pi - 1e-6
    np.testing.assert_allclose(actual[~near_pi], expected[~near_pi], atol=1e-9)
    np.testing.assert_allclose(quat_to_axis_angle(np.array([[1.0, 0, 0, 0]])), [[0, 0, 0]])
    # A 90 degree turn about z.
    np.testing.assert_allclose(quat_to_axis_angle(yaw_quat(np.pi / 2)[None]), [[0, 0, np.pi / 2]], atol=1e-12)


def test_yaw_round_trip():
    for yaw in np.linspace(-3, 3, 13):
        assert np.isclose(yaw_from_quat(yaw_quat(yaw)), yaw)


def test_axis_angle_to_mat_inverts_mat_to_axis_angle():
    mats = quat_to_mat(random_quats(100, seed=1))
    for mat in mats:
        np.testing.assert_allclose(axis_angle_to_mat(mat_to_axis_angle(mat)), mat, atol=1e-9)
    # A quarter turn about z by hand; the zero vector is the identity.
    np.testing.assert_allclose(
        axis_angle_to_mat(np.array([0.0, 0.0, np.pi / 2])), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12
    )
    np.testing.assert_array_equal(axis_angle_to_mat(np.zeros(3)), np.eye(3))
