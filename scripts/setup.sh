#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine; does nothing that is already done.
# Sourced by scripts/lab.sh and scripts/test.sh, so the README's two commands need nothing else.
set -euo pipefail

ESP_DC_CACHE="${ESP_DC_CACHE:-$HOME/.cache/esp-dc}"
export ESP_DC_CACHE
mkdir -p "$ESP_DC_CACHE"

# Debian packages: cmake+ninja build the host replica, g++-multilib makes it 32-bit like the MCU,
# libclang-dev serves bindgen, python3-venv holds Espressif's kconfgen for the Kconfig tests,
# chromium and firefox-esr are the browsers `cargo xtask interop` tests the device against
# (Firefox's H.264 plugin comes from ../shared/firefox-openh264 or ESP_DC_FIREFOX_OPENH264, never
# from the project), libbsd-dev gives ESP-IDF's linux target <sys/queue.h>.
# gcc/binutils-riscv64-unknown-elf are what ../shared/riscv32-esp-elf (the substitute for
# Espressif's RISC-V toolchain, for the esp32p4 build and size-check) runs underneath.
debian_packages=(cmake ninja-build g++-multilib libclang-dev python3-venv binutils chromium firefox-esr libbsd-dev
  gcc-riscv64-unknown-elf binutils-riscv64-unknown-elf)
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

# ESP-IDF for the end-to-end test and `cargo xtask build`: an ESP-IDF you exported yourself
# (IDF_PATH set) is used as it is. Otherwise the v5.5.1 tree trimmed for the linux target that CI
# keeps beside every clone (../shared/esp-idf-v5.5.1/esp-idf, read-only) gets a Python venv of
# its own here, as its README says. esp-idf-size stays on 1.x: ESP-IDF 5.5's size-components
# --format json2 needs its `ng` module, which 2.x no longer has.
ESP_DC_SHARED_IDF="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/../shared/esp-idf-v5.5.1/esp-idf"
if [ -z "${IDF_PATH:-}" ] && [ -f "$ESP_DC_SHARED_IDF/tools/idf.py" ]; then
  export IDF_PATH="$(cd "$ESP_DC_SHARED_IDF" && pwd)"
  export IDF_PYTHON_ENV_PATH="$ESP_DC_CACHE/idf-venv"
  export IDF_TOOLS_PATH="$ESP_DC_CACHE/idf-tools"
  export IDF_COMPONENT_MANAGER=0 IDF_SKIP_CHECK_SUBMODULES=1
  if ! "$IDF_PYTHON_ENV_PATH/bin/python" -c "import esp_idf_size.ng, kconfgen, click" >/dev/null 2>&1; then
    echo "setup: installing ESP-IDF's Python requirements into $IDF_PYTHON_ENV_PATH" >&2
    python3 -m venv "$IDF_PYTHON_ENV_PATH"
    echo "esp-idf-size>=1.6,<2" > "$ESP_DC_CACHE/idf-constraints.txt"
    "$IDF_PYTHON_ENV_PATH/bin/pip" install -q -r "$IDF_PATH/tools/requirements/requirements.core.txt" -c "$ESP_DC_CACHE/idf-constraints.txt"
  fi
  # idf.py checks that a constraints file for its version exists; the venv above is pinned already.
  mkdir -p "$IDF_TOOLS_PATH" && touch "$IDF_TOOLS_PATH/espidf.constraints.v5.5.txt"
  export PATH="$IDF_PYTHON_ENV_PATH/bin:$IDF_PATH/tools:$PATH"
fi

# The esp32p4 build needs a RISC-V toolchain. A real Espressif riscv32-esp-elf-gcc on PATH always
# wins. Without one, the substitute beside the clone (../shared/riscv32-esp-elf: Debian's GCC 12
# with Espressif's newlib, for compiling, linking and reading the map, never for flashing) goes
# first on PATH; IDF_MAINTAINER=1 turns ESP-IDF's toolchain-version check (it wants esp-14.2.0)
# into a warning. `cargo xtask build` says when the substitute is in use.
# Its tool names are links to one script, bin/xc-wrap; where the copy beside the clone lost the
# links (each is then a file naming xc-wrap), they are made again under the cache, pointing at it.
ESP_DC_SHARED_XC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/../shared/riscv32-esp-elf"
if ! command -v riscv32-esp-elf-gcc >/dev/null 2>&1 && [ -x "$ESP_DC_SHARED_XC/bin/xc-wrap" ]; then
  xc_bin="$(cd "$ESP_DC_SHARED_XC/bin" && pwd)"
  if [ ! -x "$xc_bin/riscv32-esp-elf-gcc" ]; then
    links="$ESP_DC_CACHE/riscv32-esp-elf-bin"
    mkdir -p "$links"
    for tool in "$xc_bin"/riscv32-esp-elf-*; do
      ln -sfn "$xc_bin/xc-wrap" "$links/$(basename "$tool")"
    done
    xc_bin="$links"
  fi
  export PATH="$xc_bin:$PATH"
  export IDF_MAINTAINER=1
fi

# Builds (cargo and the host replica) are cached outside the repo.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ESP_DC_CACHE/target}"

# The test command checks style with rustfmt and clippy; a minimal rustup profile lacks them.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  echo "setup: adding rustfmt and clippy with rustup" >&2
  rustup component add rustfmt clippy >/dev/null
fi
