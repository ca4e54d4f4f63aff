#!/usr/bin/env bash
# Installs what Knock needs and is missing; takes seconds when all is there.
#   bash scripts/setup.sh          what the app needs to build and run
#   bash scripts/setup.sh --test   also what the tests need
# Versions are pinned here and in Cargo.toml; see README "What gets installed".
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_LEPTOS_VERSION=0.3.10
for_tests=false
[ "${1:-}" = "--test" ] && for_tests=true

step() { printf '\n==> %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=false
apt_install() {
  if ! $apt_updated; then
    as_root apt-get update
    apt_updated=true
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}
pg_bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

export PATH="$HOME/.cargo/bin:$PATH"

if ! have cargo; then
  echo "Rust is needed first: https://rustup.rs" >&2
  exit 1
fi

if [ -z "$(pg_bin_dir)" ] || [ ! -x "$(pg_bin_dir)/initdb" ]; then
  step "Installing the Postgres server binaries (Debian package postgresql)"
  apt_install postgresql
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  step "Adding the Rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

if ! cargo leptos --version 2>/dev/null | grep -q "$CARGO_LEPTOS_VERSION"; then
  step "Building cargo-leptos $CARGO_LEPTOS_VERSION (about 20 minutes on 2 cores, once)"
  cargo install cargo-leptos --locked --version "$CARGO_LEPTOS_VERSION"
fi

# cargo-leptos needs the wasm-bindgen CLI of exactly the version in Cargo.lock.
wasm_bindgen_version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
if ! wasm-bindgen --version 2>/dev/null | grep -q "$wasm_bindgen_version"; then
  step "Building wasm-bindgen-cli $wasm_bindgen_version (about 5 minutes, once)"
  cargo install wasm-bindgen-cli --version "$wasm_bindgen_version"
fi

if $for_tests; then
  if [ ! -x /usr/bin/chromium ]; then
    step "Installing Chromium for the browser tests (Debian package chromium)"
    apt_install chromium
  fi
  if [ ! -d end2end/node_modules/@playwright/test ] || [ end2end/package-lock.json -nt end2end/node_modules/.package-lock.json ]; then
    step "Installing the browser-test packages (npm ci in end2end/)"
    (cd end2end && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
  fi
fi
