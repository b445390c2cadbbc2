#!/usr/bin/env bash
# Create .venv and install senet-dist (with test extras) plus the offline Fashion-MNIST Debian package.
# Idempotent: the pip step is skipped while pyproject.toml is unchanged since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.senet-dist-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c 'import senet_dist' 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi

# Offline real data: Debian's dataset-fashion-mnist (best effort; lfw-subset ships with scikit-image).
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; else sudo=skip; fi
  if [ "$sudo" != skip ]; then
    { $sudo apt-get install -y -q dataset-fashion-mnist || { $sudo apt-get update -q && $sudo apt-get install -y -q dataset-fashion-mnist; }; } >/dev/null 2>&1 \
      || echo "note: could not install dataset-fashion-mnist; the fashion-mnist dataset will be unavailable" >&2
  else
    echo "note: run 'sudo apt-get install dataset-fashion-mnist' to enable the fashion-mnist dataset" >&2
  fi
fi
