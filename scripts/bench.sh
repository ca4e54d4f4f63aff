#!/usr/bin/env bash
# The load benchmark of docs/benchmarks.md: builds the release server and
# bundle and the load generator, then drives the server on its own embedded
# database (or DATABASE_URL) and prints the tables. Arguments go to
# knock-load (see `src/bin/knock-load.rs`); without any, the full set.
#
#   bash scripts/bench.sh --against REV [knock-load arguments]
# first builds and runs the same load on git revision REV (in a worktree
# under target/bench-against/, with its own target directory and its own
# load generator), then on this checkout: a change measured side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
against=""
if [ "${1:-}" = "--against" ]; then
  against=$(git rev-parse --verify "${2:?--against needs a revision}^{commit}")
  shift 2
fi
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
step() { printf '\n==> %s\n' "$*"; }

# Release builds run wasm-opt; Debian's binaryen is too old (TOOLCHAIN.md).
if ! command -v wasm-opt >/dev/null; then
  step "Installing wasm-opt (npm binaryen) into .tools/"
  mkdir -p .tools/binaryen
  (cd .tools/binaryen && npm i --silent --no-save binaryen@132)
  export PATH="$PWD/.tools/binaryen/node_modules/.bin:$PATH"
fi

# Builds the release server, bundle and load generator in the current
# directory and prints the bundle's size.
build() {
  step "cargo leptos build --release ($(git rev-parse --short HEAD))"
  cargo leptos build --release
  step "cargo build --release --features load --bin knock-load"
  cargo build --release --features load --bin knock-load
  wasm=target/site/pkg/knock.wasm
  printf 'release WASM: %s bytes raw, %s gzip -9\n' "$(stat -c %s "$wasm")" "$(gzip -9 -c "$wasm" | wc -c)"
}

if [ "$#" -eq 0 ]; then
  set -- --senders 2,64,256 --users 512 --duration 10 --streams 100,1000,10000 \
    --fanout 10000 --render 200 --pgbench
fi

# Ten thousand streams need as many sockets on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if [ -n "$against" ]; then
  base="target/bench-against/$against"
  [ -d "$base" ] || git worktree add --detach "$base" "$against"
  (cd "$base" && build)
  step "knock-load on $against"
  (cd "$base" && target/release/knock-load --server target/release/knock "$@")
fi

build
step "knock-load on this checkout ($(git rev-parse --short HEAD))"
target/release/knock-load --server target/release/knock "$@"
