#!/usr/bin/env bash
# The prepared device check (see benchmarks/gpu_check.py for the parts and the files):
#   bash benchmarks/gpu_check.sh --device cuda [--out DIR]   # DIR defaults to $OUT
#   bash benchmarks/gpu_check.sh --device cpu --quick        # end to end on a CPU
# Runs from the repository root with the machine's own python3 (or $PYTHON). Pure-Python
# wheels shipped in .whl/ (geomloss) are installed into a temporary folder first;
# factorkit itself runs from the checkout (PYTHONPATH=.).
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="."
if compgen -G ".whl/*.whl" > /dev/null; then
    SITE="${TMPDIR:-/tmp}/factorkit-gpu-check-site"
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl; then
        export PYTHONPATH="$SITE:."
    else
        echo "[gpu_check] installing .whl/*.whl failed; going on without them" >&2
    fi
fi
exec "$PY" benchmarks/gpu_check.py "$@"
