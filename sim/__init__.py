"""Simulation: batched environments behind one contract (`sim.core`), and their registry.

Importing `sim` registers the arm suite's ``vla_rl/<Task>-v0`` ids with gymnasium.
"""

from sim.gym import register_arm_tasks
from sim.registry import Registry

ENVS = Registry("env")
ENVS.register("arm", "sim.mujoco.arm.env:ArmBatchedEnv")
ENVS.register("so101", "sim.mujoco.so101.env:So101BatchedEnv")
ENVS.register("libero_spatial", "sim.libero.env:LiberoSpatialEnv")
ENVS.register("libero_object", "sim.libero.env:LiberoObjectEnv")
ENVS.register("libero_goal", "sim.libero.env:LiberoGoalEnv")
ENVS.register("libero_10", "sim.libero.env:Libero10Env")
ENVS.register("libero_90", "sim.libero.env:Libero90Env")
ENVS.register("robosuite", "sim.robosuite.env:RobosuiteEnv")

register_arm_tasks()
