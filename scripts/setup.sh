#!/usr/bin/env bash
# Create/update .venv with evalbench and everything it needs (torch pinned in the same pip
# command), and install Debian's Fashion-MNIST and chromium (the browser test) where apt-get is usable.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
  echo "setup: installing Debian's dataset-fashion-mnist (optional task fashion-mnist)"
  if ! { $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
         || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; }; then
    echo "setup: could not install dataset-fashion-mnist; the fashion-mnist task stays unavailable (see tasks/fashion-mnist.yaml)"
  fi
fi

# Debian's chromium: the leaderboard page's browser test (tests/results/test_browser.py) drives it headless;
# without it that test is skipped with the reason
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
  echo "setup: installing Debian's chromium (optional: the leaderboard page's headless-browser test)"
  if ! { $SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
         || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q chromium >/dev/null 2>&1; }; }; then
    echo "setup: could not install chromium; tests/results/test_browser.py will be skipped (apt-get install chromium)"
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.14.1 / torchvision==0.29.1 are pinned in pyproject.toml and resolved in this one command
.venv/bin/python -m pip install -q -e ".[test]"
echo "setup: ready ($(.venv/bin/python -c 'import torch, evalbench; print("evalbench", evalbench.__version__, "torch", torch.__version__)'))"
