#!/usr/bin/env bash
# One entry point for a fresh machine: installs what is missing, then runs the command.
#   ./dev.sh train [ARGS...]   train (default: PPO on the built-in CartPole, default backend)
#   ./dev.sh test  [ARGS...]   the whole test suite (tests/ and conformance/)
#   ./dev.sh puffer ARGS...    any puffer CLI command inside the project's venv
# Installs: Debian's `clang` (tinygrad's CPU device compiles kernels with it; needs root or sudo),
# for `test` also Debian's `chromium` and `npm` (exported policies are tested on onnxruntime-web in
# headless Chromium and on onnxruntime-node; the tests fetch those npm packages and the oldest
# onnxruntime wheel into ~/.cache themselves), and a venv in .venv with puffer and its dev extras;
# torch is held to the local CPU build.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv

need_clang() {
  command -v clang >/dev/null 2>&1 && return
  echo "[dev.sh] installing clang (tinygrad's CPU compiler) with apt-get" >&2
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq clang >/dev/null
}

need_browser() {
  local missing=""
  command -v chromium >/dev/null 2>&1 || missing="chromium"
  command -v npm >/dev/null 2>&1 || missing="$missing npm"
  [ -z "$missing" ] && return
  echo "[dev.sh] installing$missing with apt-get (tests of exported policies in the browser and Node)" >&2
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  # shellcheck disable=SC2086 - the package list is meant to split
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
}

need_venv() {
  local stamp=$VENV/.puffer-installed
  if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then return; fi
  echo "[dev.sh] creating $VENV and installing puffer[dev] (about a minute)" >&2
  [ -x $VENV/bin/python ] || python3 -m venv $VENV
  $VENV/bin/pip install -q --disable-pip-version-check -c constraints/cpu.txt -e ".[dev]"
  touch "$stamp"
}

cmd=${1:-train}; shift || true
need_clang
need_venv
case "$cmd" in
  train) exec $VENV/bin/puffer train "${@:-cartpole}" ;;
  test)  need_browser; exec $VENV/bin/python -m pytest "$@" ;;
  puffer) exec $VENV/bin/puffer "$@" ;;
  *) echo "usage: ./dev.sh train|test|puffer [ARGS...]" >&2; exit 2 ;;
esac
