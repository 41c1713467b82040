#!/usr/bin/env bash
# Set up .venv-py4dstem: py4DSTEM 0.14.18, the 4D-STEM reference solver of benchmarks/py4dstem_check.py.
#
#     bash benchmarks/py4dstem_env.sh [VENV_DIR]        # default: .venv-py4dstem in the repository root
#
# py4DSTEM 0.14.18 needs numpy < 2 and scikit-learn < 1.5, which the project's own .venv (numpy 2,
# torch) cannot hold, so it gets a virtualenv of its own; the check talks to it through
# benchmarks/py4dstem_worker.py and .npz files. No torch and no CUDA: py4DSTEM's ptychography runs
# on numpy (CuPy only for device="gpu"). Needs python3.11 and a reachable package index (pip);
# a second run reuses the venv when py4DSTEM already imports. Set PYTHON to use another interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${1:-.venv-py4dstem}
python=${PYTHON:-python3.11}
requirements=("py4DSTEM==0.14.18" "numpy<2" "scikit-learn<1.5")

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import py4DSTEM" 2>/dev/null; then
    echo "py4dstem_env: $venv already holds py4DSTEM $("$venv/bin/python" -c 'import py4DSTEM; print(py4DSTEM.__version__)')"
    exit 0
fi
if ! command -v "$python" >/dev/null; then
    echo "py4dstem_env: $python not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
"$python" -m venv "$venv"
if ! "$venv/bin/pip" install -q "${requirements[@]}"; then
    echo "py4dstem_env: pip could not install ${requirements[*]} into $venv." >&2
    echo "py4dstem_env: is the package index reachable (pip config list, PIP_INDEX_URL, a proxy)?" >&2
    echo "py4dstem_env: nothing else needs this venv; remove it with: rm -rf $venv" >&2
    exit 1
fi
"$venv/bin/python" -c "import numpy, py4DSTEM; print(f'py4dstem_env: {\"$venv\"}: py4DSTEM {py4DSTEM.__version__}, numpy {numpy.__version__}')"
