#!/usr/bin/env bash
# Checks every sqlx query macro against a freshly migrated database and
# writes what it learns to .sqlx/ (the offline data every build uses), or,
# with --check, fails when .sqlx/ differs from it.
#
#   DATABASE_URL=postgres://… bash scripts/sqlx-prepare.sh [--check]
#
# DATABASE_URL names a Postgres server where a database `knock_sqlx` may be
# made; it is dropped and made again. Needs `psql`, nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATABASE_URL:?DATABASE_URL must name a Postgres server}"
check=false
[ "${1:-}" = "--check" ] && check=true

db=knock_sqlx
url=$(printf '%s' "$DATABASE_URL" | sed -E "s#^(postgres(ql)?://[^/?]*)/?[^?]*#\1/$db#")
psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
for migration in migrations/*.sql; do
  psql -q -v ON_ERROR_STOP=1 "$url" -f "$migration" >/dev/null
done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The macros write their data only when they run: make cargo expand them.
touch src/lib.rs
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$out" DATABASE_URL="$url" \
  cargo check --quiet --features load --lib --bins
if $check; then
  if ! diff -r -q .sqlx "$out"; then
    echo "The offline query data in .sqlx/ is stale: run scripts/sqlx-prepare.sh and commit .sqlx/." >&2
    exit 1
  fi
  echo ".sqlx/ matches the statements and the migrations."
else
  rm -rf .sqlx
  cp -r "$out" .sqlx
  echo "Wrote $(ls .sqlx | wc -l) statements to .sqlx/."
fi
