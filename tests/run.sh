#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit/property tests, and the SIPp scenarios
# against the real binary. Installs what it needs on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)   # libopus, bundled by the opus crate
command -v pulseaudio >/dev/null 2>&1 || need_apt+=(pulseaudio)   # Firefox's WebAudio: a private server with a null sink per test browser
[ -x /usr/bin/chromium ] || need_apt+=(chromium)         # the browser tests (tests/web.rs): never skipped
[ -x /usr/bin/firefox-esr ] || need_apt+=(firefox-esr)   # the same, in Firefox (WebDriver BiDi)
command -v svwar >/dev/null 2>&1 || need_apt+=(sipvicious)   # the scanner tests (tests/sipp.rs): svwar, svcrack
command -v baresip >/dev/null 2>&1 || need_apt+=(baresip)        # real clients (tests/clients.rs): caller and call center
command -v linphonec >/dev/null 2>&1 || need_apt+=(linphone-cli) # the same, linphone's stack
command -v dumpcap >/dev/null 2>&1 || need_apt+=(tshark)          # the clients' tests capture every leg on lo
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Capturing on lo needs CAP_NET_RAW: root has it; anyone else gets it on dumpcap.
if [ "$(id -u)" != 0 ] && command -v getcap >/dev/null 2>&1 && ! getcap "$(command -v dumpcap)" | grep -q cap_net_raw; then
  sudo setcap cap_net_raw,cap_net_admin+eip "$(command -v dumpcap)"
fi

# Reuse earlier builds when the cache exists; a fresh clone builds from nothing.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchboard-target}"
export CARGO_TERM_COLOR=never

# The widget's budgets (SPEC §1): loader < 10 KB and media client < 100 KB, gzipped.
check_size() {
  local file=$1 limit=$2 size
  size=$(gzip -9c "$file" | wc -c)
  echo "$file: $size bytes gzipped (limit $limit)"
  [ "$size" -lt "$limit" ] || { echo "$file is over its size budget" >&2; exit 1; }
}
check_size modules/webrtc/web/c2c.js 10240
check_size modules/webrtc/web/client.js 102400

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  # G.729 is an opt-in feature (licence): its codec tests run on their own.
  cargo nextest run -p switchboard-media --features g729 --locked -E 'test(g729)'
else
  cargo test --workspace --locked --no-fail-fast
  cargo test -p switchboard-media --features g729 --locked g729
fi
