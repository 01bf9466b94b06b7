"""Simulation: batched environments behind one contract (`sim.core`), and their registry.

Importing `sim` registers the arm suite's ``vla_rl/<Task>-v0`` ids with gymnasium.
"""

from sim.gym import register_arm_tasks
from sim.registry import Registry

ENVS = Registry("env")
ENVS.register("arm", "sim.mujoco.arm.env:ArmBatchedEnv")
ENVS.register("so101", "sim.mujoco.so101.env:So101BatchedEnv")

register_arm_tasks()
