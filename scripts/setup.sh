#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine; does nothing that is already done.
# Sourced by scripts/lab.sh and scripts/test.sh, so the README's two commands need nothing else.
set -euo pipefail

ESP_DC_CACHE="${ESP_DC_CACHE:-$HOME/.cache/esp-dc}"
export ESP_DC_CACHE
mkdir -p "$ESP_DC_CACHE"

# Debian packages: cmake+ninja build the host replica, g++-multilib makes it 32-bit like the MCU,
# libclang-dev serves bindgen, python3-venv holds Espressif's kconfgen for the Kconfig tests.
debian_packages=(cmake ninja-build g++-multilib libclang-dev python3-venv binutils)
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

# Builds (cargo and the host replica) are cached outside the repo.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ESP_DC_CACHE/target}"
