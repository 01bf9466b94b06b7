"""Record the successful action sequence replayed by ``test_libero.py`` (run by hand, not by pytest).

A scripted pick-and-place controller with privileged state (object positions from the simulator) moves the
goal's object onto its target in one LIBERO task from one fixed eval initial state, through the same
`LiberoBatchedEnv` the tests use (so the 10 no-op steps are included), and saves the actions as JSON:

    MUJOCO_GL=egl .venv/bin/python tests/sim/libero/record_trajectory.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sim.libero.env import LiberoBatchedEnv

SUITE = "libero_spatial"
TASK = "pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate"
OBJECT, TARGET = "akita_black_bowl_1", "plate_1"
INIT_STATE_ID = 0
OUTPUT = Path(__file__).parent / "data" / "libero_spatial_task0_state0.json"
RIM_OFFSET = np.array([0.0, 0.045, 0.0])  # grasp the bowl wall between the fingers (they close along y)
POSITION_SCALE = 0.05  # OSC_POSE: action 1.0 moves the end-effector goal by 5 cm


def waypoints(
    object_pos: np.ndarray, target_pos: np.ndarray, rim: np.ndarray
) -> list[tuple[np.ndarray, float, int]]:
    """(end-effector position, gripper, steps) phases of a top-down rim grasp and place."""
    grasp = object_pos + rim
    place = target_pos + rim
    return [
        (grasp + np.array([0.0, 0.0, 0.12]), -1.0, 40),
        (grasp + np.array([0.0, 0.0, 0.01]), -1.0, 30),
        (grasp + np.array([0.0, 0.0, 0.01]), 1.0, 15),
        (grasp + np.array([0.0, 0.0, 0.15]), 1.0, 30),
        (place + np.array([0.0, 0.0, 0.15]), 1.0, 40),
        (place + np.array([0.0, 0.0, 0.05]), 1.0, 25),
        (place + np.array([0.0, 0.0, 0.05]), -1.0, 15),
        (place + np.array([0.0, 0.0, 0.15]), -1.0, 20),
    ]


def main() -> None:
    """Run the scripted controller once; save the actions if the episode succeeds."""
    env = LiberoBatchedEnv(SUITE, num_envs=1, tasks=[TASK], cameras=(), autoreset_mode="Disabled")
    try:
        obs, _ = env.reset(options={"split": "eval", "init_state_ids": [INIT_STATE_ID]})
        libero = env.libero_envs[0].env
        body = libero.obj_body_id
        object_pos = libero.sim.data.body_xpos[body[OBJECT]].copy()
        target_pos = libero.sim.data.body_xpos[body[TARGET]].copy()
        actions = []
        success = False
        for goal, gripper, steps in waypoints(object_pos, target_pos, RIM_OFFSET):
            for _ in range(steps):
                eef = obs["observation.state"][0, :3]
                action = np.zeros(7)
                action[:3] = np.clip((goal - eef) / POSITION_SCALE * 2.0, -1, 1)
                action[6] = gripper
                obs, _, terminated, truncated, _info = env.step(action[None])
                actions.append(action.round(6).tolist())
                if terminated[0]:
                    success = True
                    break
                if truncated[0]:
                    break
            if success or truncated[0]:
                break
        bowl = libero.sim.data.body_xpos[body[OBJECT]]
        print(
            f"success={success} steps={len(actions)} object now {bowl.round(3)} target {target_pos.round(3)}"
        )
        if success:
            OUTPUT.parent.mkdir(parents=True, exist_ok=True)
            record = {
                "suite": SUITE,
                "task": TASK,
                "split": "eval",
                "init_state_id": INIT_STATE_ID,
                "actions": actions,
            }
            OUTPUT.write_text(json.dumps(record) + "\n")
            print(f"wrote {OUTPUT}")
    finally:
        env.close()


if __name__ == "__main__":
    main()
