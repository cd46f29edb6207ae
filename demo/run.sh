#!/usr/bin/env bash
# make demo: a daemon runs Magento-style cron jobs from cron_schedule on SQLite for about 30 s,
# shows `bin/forklift status` while it runs, stops with `stop --wait`, prints the rows.
set -euo pipefail
cd "$(dirname "$0")/.."
export FORKLIFT_EXTENSION="$PWD/target/release/libforklift.so"
export FORKLIFT_DEMO_DB="$PWD/var/demo.sqlite"
export FORKLIFT_DEMO_RUN="${TMPDIR:-/tmp}/forklift-demo-$(id -u)"
PHP=(php -d "extension=$FORKLIFT_EXTENSION")
mkdir -p var
rm -f "$FORKLIFT_DEMO_DB" "$FORKLIFT_DEMO_DB-wal" "$FORKLIFT_DEMO_DB-shm"
PID_FILE="$FORKLIFT_DEMO_RUN/demo-shop.pid"
LOG="$PWD/var/demo.log"

echo "== starting: bin/forklift run demo/shop.php --daemonize --log=var/demo.log"
"${PHP[@]}" bin/forklift run demo/shop.php --daemonize --log="$LOG"
trap '"${PHP[@]}" bin/forklift stop --pid-file="$PID_FILE" --timeout=30 >/dev/null 2>&1 || true' EXIT

for at in 6 18; do
    sleep $((at == 6 ? 6 : 12))
    echo
    echo "== bin/forklift status (after ${at} s)"
    "${PHP[@]}" bin/forklift status --pid-file="$PID_FILE"
done
sleep 12
echo
echo "== bin/forklift stop --wait (after 30 s)"
"${PHP[@]}" bin/forklift stop --pid-file="$PID_FILE" --timeout=30
trap - EXIT
echo
echo "== cron_schedule (Magento's table) with Forklift's facts (forklift_cron_run) beside it"
"${PHP[@]}" demo/report.php "$FORKLIFT_DEMO_DB"
echo
echo "The database stays at var/demo.sqlite (sqlite3 var/demo.sqlite 'select * from cron_schedule');"
echo "the daemon's log at var/demo.log. Nothing is left running:"
pgrep -fa "forklift: demo-shop" || echo "  (no forklift: demo-shop process)"
