#!/usr/bin/env bash
# Sets up what is missing, then builds and runs Knock at http://127.0.0.1:3000.
# With DATABASE_URL unset, Knock runs its own Postgres in ./data (KNOCK_DATA_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
printf '\n==> Building and starting Knock (the first build takes several minutes)\n'
exec cargo leptos serve "$@"
