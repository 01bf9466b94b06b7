"""Small batched rotation helpers (MuJoCo's quaternion convention: w, x, y, z)."""

from __future__ import annotations

import math

import numpy as np


def quat_to_mat(quat: np.ndarray) -> np.ndarray:
    """Unit quaternions ``[..., 4]`` (w, x, y, z) -> rotation matrices ``[..., 3, 3]``."""
    w, x, y, z = np.moveaxis(quat, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def mat_to_axis_angle(mat: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` -> axis-angle vectors ``[..., 3]`` (angle in [0, pi])."""
    cos = np.clip((np.trace(mat, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    axis = np.stack(
        [mat[..., 2, 1] - mat[..., 1, 2], mat[..., 0, 2] - mat[..., 2, 0], mat[..., 1, 0] - mat[..., 0, 1]],
        -1,
    )
    sin = np.sin(angle)
    small = sin < 1e-6
    scale = np.where(small, 0.5, angle / (2 * np.where(small, 1.0, sin)))
    result = axis * scale[..., None]
    # Near pi the antisymmetric part vanishes: recover the axis from the symmetric part instead.
    near_pi = small & (cos < 0)
    if np.any(near_pi):
        sym = (mat[near_pi] + np.eye(3)) / 2
        column = np.argmax(np.diagonal(sym, axis1=-2, axis2=-1), axis=-1)
        axis_pi = sym[np.arange(len(column)), :, column]
        axis_pi /= np.linalg.norm(axis_pi, axis=-1, keepdims=True)
        result[near_pi] = axis_pi * np.pi
    return result


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """Unit quaternions ``[..., 4]`` -> axis-angle ``[..., 3]`` (angle in [0, pi]).

    With q = (w, v) flipped so that w >= 0: angle = 2 atan2(|v|, w), axis = v / |v|.
    """
    quat = np.where(quat[..., :1] < 0, -quat, quat)
    vector = quat[..., 1:]
    norm = np.linalg.norm(vector, axis=-1, keepdims=True)
    angle = 2 * np.arctan2(norm, quat[..., :1])
    # angle / |v| -> 2 / w as |v| -> 0 (small rotations).
    scale = np.where(norm > 1e-9, angle / np.maximum(norm, 1e-12), 2.0 / np.maximum(quat[..., :1], 1e-12))
    return vector * scale


def yaw_from_quat(quat: np.ndarray) -> np.ndarray:
    """Heading (rotation about world z) of ``[..., 4]`` quaternions, in (-pi, pi]."""
    w, x, y, z = np.moveaxis(quat, -1, 0)
    return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def yaw_quat(yaw: float) -> np.ndarray:
    """Quaternion ``[4]`` of a rotation by ``yaw`` about world z."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def rot_z(yaw: float) -> np.ndarray:
    """Rotation matrix ``[3, 3]`` about z."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def axis_angle_to_mat(vector: np.ndarray) -> np.ndarray:
    """Axis-angle vector ``[3]`` (angle = its norm) -> rotation matrix ``[3, 3]`` (Rodrigues' formula)."""
    angle = float(np.linalg.norm(vector))
    if angle < 1e-12:
        return np.eye(3)
    x, y, z = vector / angle
    cross = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross
