"""One lazy registry mechanism for envs, policies, rewards, algorithms and robots.

Entries are registered by import path (``"sim.mujoco.arm.env:ArmEnv"``), so looking a name up never
imports heavy modules (torch, LIBERO, lerobot, ray) until that entry is used. An unknown name raises a
`KeyError` that lists the known names. This module depends on nothing but the standard library, so the
learning core (`vla_rl`), the simulators (`sim`) and the hardware layer (`real`) can all use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any


class Registry:
    """A named mapping from short names to lazily imported objects.

    Example:
        >>> envs = Registry("env")
        >>> envs.register("arm", "sim.mujoco.arm.env:ArmBatchedEnv")
        >>> cls = envs.get("arm")  # imports sim.mujoco.arm.env now

    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._targets: dict[str, str] = {}

    def register(self, name: str, target: str) -> None:
        """Register ``name`` -> ``"package.module:attribute"``; a name can be registered once."""
        if ":" not in target:
            raise ValueError(f"{self.kind} target must look like 'package.module:attribute', got {target!r}")
        if name in self._targets and self._targets[name] != target:
            raise ValueError(f"{self.kind} {name!r} is already registered to {self._targets[name]}")
        self._targets[name] = target

    def get(self, name: str) -> Any:
        """Import and return the object registered as ``name``."""
        if name not in self._targets:
            raise KeyError(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}")
        module_name, attribute = self._targets[name].split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
