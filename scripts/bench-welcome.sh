#!/usr/bin/env bash
# The welcome-email figures of docs/benchmarks.md: starts the release server
# that scripts/bench.sh built (target/release/knock) on a fresh embedded
# database in dev mode, signs N users up through dev sign-in (8 at a time),
# and reports when every welcome email was in the outbox (read from
# /metrics on KNOCK_METRICS_ADDR) and each email's time from enqueued to
# done (from the jobs table).
#
#   bash scripts/bench-welcome.sh [N]     # default 1000
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
site=127.0.0.1:3200
metrics=127.0.0.1:3201
dir=$(mktemp -d /tmp/knock-welcome.XXXXXX)
chmod 755 "$dir"
env -u DATABASE_URL KNOCK_DATA_DIR="$dir/data" LEPTOS_SITE_ROOT=target/site LEPTOS_SITE_ADDR=$site \
  KNOCK_METRICS_ADDR=$metrics RUST_LOG=warn target/release/knock > "$dir/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 120); do curl -sf "http://$site/healthz" > /dev/null && break; sleep 0.5; done

start=$(date +%s.%N)
seq 1 "$n" | xargs -P 8 -I{} curl -sf -o /dev/null -X POST \
  -H 'content-type: application/x-www-form-urlencoded' -d 'username=u{}' "http://$site/api/session/dev-sign-in"
signed_up=$(date +%s.%N)
until [ "$(curl -s "http://$metrics/metrics" | awk '/kind="welcome_email",status="done"/ {print $2}')" = "$n" ]; do
  sleep 0.05
done
sent=$(date +%s.%N)
printf 'sign-ups: %d in %.2f s; every welcome email in the outbox %.2f s after the first sign-up (%d files)\n' \
  "$n" "$(echo "$signed_up - $start" | bc)" "$(echo "$sent - $start" | bc)" "$(ls "$dir/data/outbox" | wc -l)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
as_pg psql -X -q -h "$dir/data/postgres" -U knock knock -c "
SELECT count(*) AS emails,
       round(1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at))::numeric, 1) AS \"enqueued→done p50 ms\",
       round(1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at))::numeric, 1) AS \"p99 ms\",
       round(1000 * max(extract(epoch FROM finished_at - created_at))::numeric, 1) AS \"max ms\"
  FROM jobs WHERE kind = 'welcome_email'"
