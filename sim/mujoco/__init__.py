"""Our own MuJoCo suites (arm, car, drone) and the batched engine they share.

Off-screen rendering needs a GL platform chosen before `mujoco` is first imported; unless the caller
chose one, use EGL (hardware EGL on a GPU machine, Mesa's software EGL elsewhere).
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
