#!/usr/bin/env bash
# Fork round-trip benchmark, side by side in one run:
#   (a) Forklift\fork(fn () => 42)->wait()                      -- the extension
#   (b) pcntl_fork + socket_create_pair + serialize + waitpid  -- what users write today (child exit())
#   (b') the same by a careful user whose child skips PHP's shutdown (kills itself with SIGKILL)
#   (c) bare C fork/_exit/waitpid at the same resident memory   -- the physical limit
# at a parent heap of ~10 MB and ~200 MB. Goals: a/b <= 1.0 and a/c <= 1.3.
# Then timeout latency (bench/timeouts.php): how long after a job's timeout: wait() returns
# (goal p99 < 10 ms), and how long after Forklift\timeout()'s deadline the TimeoutException is
# caught, for a CPU loop and for usleep() (goal p99 < 2 ms).
#
# Informational: speed is not asserted; exits 0 when the goals are missed, and also when
# Forklift\fork is not available yet (column shown as n/a). Exits 1 only when a run that
# could run failed (crash, wrong result) or a prerequisite (php, cc) is missing.
#
# env: BENCH_ITER_SMALL (default 2000, 10 MB)  BENCH_ITER_LARGE (default 300, 200 MB)
#      BENCH_TIMEOUT_KILL (default 200 jobs)  BENCH_TIMEOUT_INPROC (default 500 runs each)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
EXT="$ROOT/target/release/libforklift.so"
BARE="$ROOT/target/bench/bare_fork"
ITER_SMALL=${BENCH_ITER_SMALL:-2000}
ITER_LARGE=${BENCH_ITER_LARGE:-300}
TIMEOUT_KILL=${BENCH_TIMEOUT_KILL:-200}
TIMEOUT_INPROC=${BENCH_TIMEOUT_INPROC:-500}

say() { printf 'bench: %s\n' "$*"; }
die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $ITER_SMALL =~ ^[1-9][0-9]*$ ]] || die "BENCH_ITER_SMALL must be a positive integer (got '$ITER_SMALL')"
[[ $ITER_LARGE =~ ^[1-9][0-9]*$ ]] || die "BENCH_ITER_LARGE must be a positive integer (got '$ITER_LARGE')"
[[ $TIMEOUT_KILL =~ ^[1-9][0-9]*$ ]] || die "BENCH_TIMEOUT_KILL must be a positive integer (got '$TIMEOUT_KILL')"
[[ $TIMEOUT_INPROC =~ ^[1-9][0-9]*$ ]] || die "BENCH_TIMEOUT_INPROC must be a positive integer (got '$TIMEOUT_INPROC')"
command -v php >/dev/null 2>&1 || die "php not found (run: make setup)"
command -v cc >/dev/null 2>&1 || die "cc not found (run: make setup)"

# (c) bare C binary, rebuilt only when the source is newer.
mkdir -p target/bench
if [[ ! -x $BARE || bench/bare_fork.c -nt $BARE ]]; then
    say "compiling bench/bare_fork.c"
    cc -O2 -o "$BARE" bench/bare_fork.c
fi

# (b) needs pcntl, sockets and posix (built into Debian's php8.2-cli).
php_mods=$(php -m)
for m in pcntl sockets posix; do
    grep -qx "$m" <<<"$php_mods" || die "php extension '$m' missing (Debian's php8.2-cli has it built in)"
done

# (a) needs the built extension; without it the column is n/a.
HAVE_EXT=1
if [[ ! -f $EXT ]]; then
    say "WARNING: $EXT not found (run: make build); Forklift column will be n/a"
    HAVE_EXT=0
fi

FAILED=0
ERRF=$(mktemp)
trap 'rm -f "$ERRF"' EXIT

# run <label> <cmd...>: sets OUT_US and OUT_RSS (kB), or "n/a" on failure.
run() {
    local label=$1 out rc
    shift
    OUT_US=n/a OUT_RSS=n/a
    set +e
    out=$("$@" 2>"$ERRF")
    rc=$?
    set -e
    if [[ $rc -eq 0 && $out =~ per_op_us=([0-9.]+)\ rss_kb=([0-9]+) ]]; then
        OUT_US=${BASH_REMATCH[1]}
        OUT_RSS=${BASH_REMATCH[2]}
        return 0
    fi
    if [[ $rc -eq 3 ]]; then
        say "$label: not available: $(tr '\n' ' ' <"$ERRF")"
    else
        say "$label: FAILED (exit $rc): $(tr '\n' ' ' <"$ERRF")${out:+ stdout: $out}"
        FAILED=1
    fi
    return 0
}

ratio() { # ratio <num> <den>
    if [[ $1 == n/a || $2 == n/a ]]; then echo n/a; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; fi
}
us() { [[ $1 == n/a ]] && echo n/a || echo "${1}us"; }
verdict() { # verdict <ratio> <limit>
    if [[ $1 == n/a ]]; then echo n/a; else awk -v r="$1" -v l="$2" 'BEGIN { print (r <= l ? "met" : "MISSED") }'; fi
}
mb() { [[ $1 == n/a ]] && echo n/a || awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }

# Resident memory of bare_fork itself with no heap, subtracted so (c) matches PHP's RSS.
run "bare baseline" "$BARE" 0 1
BARE_BASE_KB=${OUT_RSS/n\/a/0}

ROWS=()
GOALS=()
for size in 10 200; do
    if [[ $size -eq 10 ]]; then iters=$ITER_SMALL; else iters=$ITER_LARGE; fi
    say "heap ${size}MB, $iters iterations each: (a) forklift ..."
    if [[ $HAVE_EXT -eq 1 ]]; then
        run "forklift ${size}MB" php -d "extension=$EXT" bench/fork.php forklift "$size" "$iters"
    else
        OUT_US=n/a OUT_RSS=n/a
    fi
    a_us=$OUT_US a_rss=$OUT_RSS

    say "heap ${size}MB, $iters iterations each: (b) pcntl ..."
    run "pcntl ${size}MB" php bench/fork.php pcntl "$size" "$iters"
    b_us=$OUT_US b_rss=$OUT_RSS

    say "heap ${size}MB, $iters iterations each: (b') careful pcntl ..."
    run "pcntl-careful ${size}MB" php bench/fork.php pcntl-careful "$size" "$iters"
    b2_us=$OUT_US

    # (c) at the resident memory the PHP process reached (forklift run, else pcntl run).
    target_kb=$a_rss
    [[ $target_kb == n/a ]] && target_kb=$b_rss
    [[ $target_kb == n/a ]] && target_kb=$((size * 1024))
    bare_mb=$(((target_kb - BARE_BASE_KB + 512) / 1024))
    ((bare_mb < 0)) && bare_mb=0
    say "heap ${size}MB, $iters iterations each: (c) bare C at ${bare_mb}MB malloc ..."
    run "bare ${size}MB" "$BARE" "$bare_mb" "$iters"
    c_us=$OUT_US c_rss=$OUT_RSS

    ab=$(ratio "$a_us" "$b_us")
    ab2=$(ratio "$a_us" "$b2_us")
    ac=$(ratio "$a_us" "$c_us")
    ROWS+=("$(printf '%-6s %-12s %-11s %-11s %-11s %-6s %-6s %-6s %s/%s/%s' \
        "${size}MB" "$(us "$a_us")" "$(us "$b_us")" "$(us "$b2_us")" "$(us "$c_us")" "$ab" "$ab2" "$ac" \
        "$(mb "$a_rss")" "$(mb "$b_rss")" "$(mb "$c_rss")")")

    GOALS+=("$(printf "%-6s a/b=%s (<= 1.0: %s)  a/b'=%s (<= 1.0: %s)  a/c=%s (<= 1.3: %s)" \
        "${size}MB" "$ab" "$(verdict "$ab" 1.0)" "$ab2" "$(verdict "$ab2" 1.0)" "$ac" "$(verdict "$ac" 1.3)")")
done

echo
printf '%-6s %-12s %-11s %-11s %-11s %-6s %-6s %-6s %s\n' heap 'forklift(a)' 'pcntl(b)' "careful(b')" 'bare(c)' a/b "a/b'" a/c 'rss a/b/c (MB)'
printf '%s\n' "${ROWS[@]}"
echo
echo "goals: a/b <= 1.0 (not slower than hand-written pcntl), a/c <= 1.3 (within 30% of bare fork)"
echo "       a/b' compares with the fastest hand-written pcntl, whose child skips PHP's shutdown"
printf '%s\n' "${GOALS[@]}"
echo "(per_op = fork -> value back -> child reaped; informational, speed is not asserted)"

# section <name> <what it does> <script> [args...]: runs a bench script that prints its own table
# (exit 3: not available, which is not a failure).
section() {
    local name=$1 what=$2 rc
    shift 2
    echo
    if [[ $HAVE_EXT -ne 1 ]]; then
        say "$name: n/a (no extension)"
        return 0
    fi
    say "$name: $what ..."
    set +e
    php -d "extension=$EXT" "$@" 2>"$ERRF"
    rc=$?
    set -e
    if [[ $rc -eq 3 ]]; then
        say "$name: not available: $(tr '\n' ' ' <"$ERRF")"
    elif [[ $rc -ne 0 ]]; then
        say "$name: FAILED (exit $rc): $(tr '\n' ' ' <"$ERRF")"
        FAILED=1
    fi
}

section timeouts "$TIMEOUT_KILL jobs killed at their timeout, $TIMEOUT_INPROC in-process timeouts each" \
    bench/timeouts.php "$TIMEOUT_KILL" "$TIMEOUT_INPROC"
echo "(latency = how long past the deadline; informational, speed is not asserted)"

section pool "tiny tasks through Forklift\\Pool (prefetch 1 and ${BENCH_POOL_PREFETCH:-8}) and a raw-pcntl prefork pool" \
    bench/pool.php

exit "$FAILED"
