#!/usr/bin/env bash
# Sets up what is missing, then runs every check and test:
#   formatting, clippy (server and browser builds), the Rust tests against a
#   throw-away Postgres, and the browser tests against the real server on its
#   embedded database in Debian's Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "clippy: server build and load generator (ssr, load)"
cargo clippy --features load --all-targets -- -D warnings

step "clippy: browser build (hydrate, wasm32)"
cargo clippy --lib --features hydrate --target wasm32-unknown-unknown -- -D warnings

# A throw-away Postgres for the Rust tests: each #[sqlx::test] makes its own
# database in it. As root, Postgres runs as the `postgres` user.
step "Starting a throw-away Postgres for the Rust tests"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
tmp=$(mktemp -d /tmp/knock-test.XXXXXX)
chmod 755 "$tmp"
mkdir "$tmp/pg"
[ "$(id -u)" = 0 ] && chown postgres "$tmp/pg"
cleanup() {
  as_pg "$pg_bin/pg_ctl" -D "$tmp/pg" -m immediate stop >/dev/null 2>&1 || true
  # If a browser test fails, cargo-leptos kills the server without a clean
  # shutdown, and its embedded cluster would outlive this script.
  if [ -f "$tmp/data/postgres/postmaster.pid" ]; then
    as_pg "$pg_bin/pg_ctl" -D "$tmp/data/postgres" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
as_pg "$pg_bin/initdb" -D "$tmp/pg" -U knock --auth=trust -E UTF8 --no-instructions >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$tmp/pg" -l "$tmp/pg/server.log" -w \
  -o "-c listen_addresses='' -k $tmp/pg -c fsync=off -c synchronous_commit=off -c max_connections=200" start >/dev/null
export DATABASE_URL="postgres://knock@localhost/postgres?host=$tmp/pg"

step "sqlx offline data (.sqlx/) matches the statements and migrations"
bash scripts/sqlx-prepare.sh --check

step "Rust tests"
cargo test --features load

step "Browser tests (cargo leptos end-to-end, embedded database)"
mkdir "$tmp/data"
chmod 755 "$tmp/data"
env -u DATABASE_URL KNOCK_DATA_DIR="$tmp/data" cargo leptos end-to-end
