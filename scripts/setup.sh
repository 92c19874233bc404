#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine; does nothing that is already done.
# Sourced by scripts/lab.sh and scripts/test.sh, so the README's two commands need nothing else.
set -euo pipefail

ESP_DC_CACHE="${ESP_DC_CACHE:-$HOME/.cache/esp-dc}"
export ESP_DC_CACHE
mkdir -p "$ESP_DC_CACHE"

# Debian packages: cmake+ninja build the host replica, g++-multilib makes it 32-bit like the MCU,
# libclang-dev serves bindgen, python3-venv holds Espressif's kconfgen for the Kconfig tests,
# chromium is the browser `cargo xtask interop` tests the device against.
debian_packages=(cmake ninja-build g++-multilib libclang-dev python3-venv binutils chromium)
missing=()
for p in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Espressif's Kconfig tooling (kconfgen) from PyPI, in a venv outside the repo.
ESP_DC_VENV="$ESP_DC_CACHE/venv"
if [ ! -x "$ESP_DC_VENV/bin/kconfgen" ] && ! "$ESP_DC_VENV/bin/python" -m kconfgen --help >/dev/null 2>&1; then
  echo "setup: installing esp-idf-kconfig into $ESP_DC_VENV" >&2
  python3 -m venv "$ESP_DC_VENV"
  "$ESP_DC_VENV/bin/pip" install -q "esp-idf-kconfig>=2,<3"
fi
export ESP_DC_VENV
export PATH="$ESP_DC_VENV/bin:$PATH"

# aiortc (an independent WebRTC stack, the interop remote) and PyAV, whose bundled libx264
# encodes the H.264 clip the interop device sends; pinned so results stay comparable.
ESP_DC_INTEROP_VENV="$ESP_DC_CACHE/interop-venv"
if ! "$ESP_DC_INTEROP_VENV/bin/python" -c "import aiortc, av" >/dev/null 2>&1; then
  echo "setup: installing aiortc into $ESP_DC_INTEROP_VENV" >&2
  python3 -m venv "$ESP_DC_INTEROP_VENV"
  "$ESP_DC_INTEROP_VENV/bin/pip" install -q "aiortc==1.16.0" "av==18.1.0"
fi
export ESP_DC_INTEROP_VENV

# Builds (cargo and the host replica) are cached outside the repo.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ESP_DC_CACHE/target}"
