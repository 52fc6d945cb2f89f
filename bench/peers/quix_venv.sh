#!/usr/bin/env bash
# Create (once) the virtual environment the quixstreams benchmark peer runs in.
#
# quixstreams is deliberately not a ratewarden dependency: it lives in its own venv at
# ${RATEWARDEN_QUIX_VENV:-$HOME/.cache/ratewarden/quix-venv}, built with python3.11.
# Idempotent: a stamp file records the pinned requirements; when it matches, nothing is done.
# The last line printed is the venv's python path, so callers can do
#   PY=$(bench/peers/quix_venv.sh | tail -n1)
set -euo pipefail

QUIX_VERSION="3.28.1"   # newest quixstreams on the index that installs on Python 3.11 here
ORJSON_VERSION="3.13.0"
VENV="${RATEWARDEN_QUIX_VENV:-$HOME/.cache/ratewarden/quix-venv}"
PYTHON="${RATEWARDEN_QUIX_PYTHON:-python3.11}"
REQS="quixstreams==${QUIX_VERSION} orjson==${ORJSON_VERSION}"
STAMP="$VENV/.ratewarden-quix-stamp"

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$REQS" ]]; then
    echo "$VENV/bin/python"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "creating $VENV with $PYTHON" >&2
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC2086  # REQS is a word list on purpose
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $REQS >&2
"$VENV/bin/python" -c "import quixstreams, orjson; print('quixstreams', quixstreams.__version__)" >&2
echo "$REQS" > "$STAMP"
echo "$VENV/bin/python"
