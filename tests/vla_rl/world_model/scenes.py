"""Synthetic episodes for world-model tests: a red square slides left to right over a fixed scene."""

import numpy as np

SIZE = 64
SQUARE = 10
LEFT, RIGHT = 2, SIZE - SQUARE - 2  # the square's x range


def frame(x: int, y: int) -> np.ndarray:
    image = np.full((SIZE, SIZE, 3), 40, np.uint8)
    image[48:52] = 120  # a fixed "table edge"
    image[y : y + SQUARE, x : x + SQUARE] = (200, 60, 60)
    return image


def episode(y: int, length: int = 24, progress: float = 1.0) -> np.ndarray:
    """uint8 [length, SIZE, SIZE, 3]: the square moves towards RIGHT and stops at ``progress`` of the way."""
    xs = np.minimum(np.linspace(LEFT, RIGHT, length), LEFT + progress * (RIGHT - LEFT))
    return np.stack([frame(round(x), y) for x in xs])


def training_episodes(count: int = 8, seed: int = 0) -> list[np.ndarray]:
    """``count`` full episodes at heights 16-24 px."""
    rng = np.random.default_rng(seed)
    return [episode(int(rng.integers(16, 25))) for _ in range(count)]
