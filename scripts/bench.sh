#!/usr/bin/env bash
# The load benchmark of docs/benchmarks.md: builds the release server and
# bundle and the load generator, then drives the server on its own embedded
# database (or DATABASE_URL) and prints the tables. Arguments go to
# knock-load (see `src/bin/knock-load.rs`); without any, the full set.
set -euo pipefail
cd "$(dirname "$0")/.."
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

step "cargo leptos build --release"
cargo leptos build --release
step "cargo build --release --features load --bin knock-load"
cargo build --release --features load --bin knock-load

step "Release WASM size"
wasm=target/site/pkg/knock.wasm
printf 'raw: %s bytes, gzip -9: %s bytes\n' "$(stat -c %s "$wasm")" "$(gzip -9 -c "$wasm" | wc -c)"

# Ten thousand streams need as many sockets on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

step "knock-load"
if [ "$#" -eq 0 ]; then
  set -- --senders 2,64,256 --users 512 --duration 10 --streams 100,1000,10000 \
    --fanout 10000 --render 200 --pgbench
fi
target/release/knock-load --server target/release/knock "$@"
