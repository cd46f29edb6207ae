#!/usr/bin/env bash
# Forklift benchmarks. Every comparison runs ours and its baseline INTERLEAVED in the same run
# (A B, B A, A B, ...: the order is reversed every other round so that no side always goes first),
# for BENCH_ROUNDS rounds, and reports per side the median and the range (min-max) across rounds,
# and the ratio of the medians. On a noisy machine one run of each after the other can be off by
# 30 %; medians of interleaved rounds are not.
#
#   1. fork round trip (bench/fork.php, bench/bare_fork.c), at a parent heap of ~10 MB and ~200 MB:
#        (a)  Forklift\fork(fn () => 42)->wait()                       -- the extension
#        (b)  pcntl_fork + socket_create_pair + serialize + waitpid   -- what users write (child exit())
#        (b') the same by a careful user whose child skips PHP's shutdown (kills itself with SIGKILL)
#        (c)  bare C fork/_exit/waitpid at the same resident memory    -- the physical limit
#      goals: a/b <= 1.0 and a/c <= 1.3 (time per job).
#   2. pool throughput of tiny tasks (bench/pool.php), two pairings:
#        Forklift\Pool at default settings vs a raw pcntl prefork pool one task at a time (depth 1),
#        goal >= 2x; Forklift\Pool with prefetch: N vs the raw pool pipelined at depth N, goal >= 1.0x.
#   3. draining finished jobs with Forklift\wait_any (bench/wait_any.php): us per job (wall and
#      parent CPU) at two job counts, to show whether the cost per job stays flat as N grows.
#   4. timeout latency (bench/timeouts.php): how long after a job's timeout: wait() returns
#      (goal p99 < 10 ms), and how long after Forklift\timeout()'s deadline the TimeoutException is
#      caught, for a CPU loop and for usleep() (goal p99 < 2 ms). Percentiles, no baseline.
#   5. the daemon (bench/daemon.php, bench/daemon_app.php), BENCH_DAEMON_ROUNDS rounds interleaved:
#        timer drift of Daemon::every(0.001) at tick 10 000 vs a `usleep(1000); work();` loop
#        (goal < 1 ms); CPU of supervisor + dispatcher (bin/forklift run) while 1 000 jobs sleep vs
#        a pcntl waitpid(WNOHANG) + usleep(10 ms) loop (goal ~0); status query p50/p99 with those
#        1 000 running; job start latency (due time -> the job's first line) of every(0.05,
#        fork: true) vs a plain loop calling Forklift\fork() at the same grid.
#
#   6. Messenger consumers on one Redis transport (bench/messenger.php): msgs/s of forklift consume
#      (a fresh child per message; --workers=2; --prefork --workers=2) vs two and one plain
#      Symfony Workers (messenger:consume), and the per-message overhead of a child in ms.
#
# Informational: speed is never asserted; exits 0 when goals are missed, and also when Forklift is
# not available yet (shown as n/a). Exits 1 only when a run that could run failed (crash, wrong
# result) or a prerequisite (php, cc, pcntl/sockets/posix) is missing.
#
# env (defaults in brackets; a default `make bench` takes about 3.5 minutes on 2 cores, 2.5 of them
# in section 5):
#   BENCH_ROUNDS          [5]     rounds of every interleaved comparison (sections 1-3)
#   BENCH_ITER_SMALL      [400]   fork round trips per run at ~10 MB, per side and round
#   BENCH_ITER_LARGE      [60]    fork round trips per run at ~200 MB, per side and round
#   BENCH_POOL_TASKS      [20000] tasks per pool run, per side and round
#   BENCH_POOL_WORKERS    [4]     workers of every pool
#   BENCH_POOL_PREFETCH   [8]     N of the second pool pairing (prefetch: N vs depth N)
#   BENCH_WAIT_ANY_SMALL  [250]   jobs drained by wait_any, small run
#   BENCH_WAIT_ANY_LARGE  [1000]  jobs drained by wait_any, large run (needs ~2 open files per job:
#                                 the soft open-files limit is raised up to the hard limit here)
#   BENCH_TIMEOUT_KILL    [200]   jobs killed at their timeout (section 4)
#   BENCH_TIMEOUT_INPROC  [500]   in-process timeouts of each kind (section 4)
#   BENCH_DAEMON_ROUNDS   [3, or BENCH_ROUNDS when smaller]  rounds of every daemon comparison
#   BENCH_DAEMON_TICKS    [10000] ticks of the 1 ms timer (section 5; ~10 s per side and round)
#   BENCH_DAEMON_JOBS     [1000]  sleeping jobs (section 5; the open-files limit is raised for them)
#   BENCH_DAEMON_QUERIES  [200]   status queries per round
#   BENCH_DAEMON_STARTS   [200]   job starts per side and round, one per 50 ms tick
# A quick run while developing:
#   BENCH_ROUNDS=3 BENCH_ITER_SMALL=50 BENCH_ITER_LARGE=10 BENCH_POOL_TASKS=2000 \
#   BENCH_WAIT_ANY_LARGE=500 BENCH_TIMEOUT_KILL=20 BENCH_TIMEOUT_INPROC=50 \
#   BENCH_DAEMON_TICKS=2000 BENCH_DAEMON_STARTS=40 bench/run.sh
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
EXT="$ROOT/target/release/libforklift.so"
BARE="$ROOT/target/bench/bare_fork"

say() { printf 'bench: %s\n' "$*"; }
die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }
posint() { # posint <NAME> <default>: the value of env NAME, checked
    local v=${!1:-$2}
    [[ $v =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer (got '$v')"
    echo "$v"
}

ROUNDS=$(posint BENCH_ROUNDS 5)
ITER_SMALL=$(posint BENCH_ITER_SMALL 400)
ITER_LARGE=$(posint BENCH_ITER_LARGE 60)
TIMEOUT_KILL=$(posint BENCH_TIMEOUT_KILL 200)
TIMEOUT_INPROC=$(posint BENCH_TIMEOUT_INPROC 500)
BENCH_ROUNDS=$ROUNDS
BENCH_POOL_TASKS=$(posint BENCH_POOL_TASKS 20000)
BENCH_POOL_WORKERS=$(posint BENCH_POOL_WORKERS 4)
BENCH_POOL_PREFETCH=$(posint BENCH_POOL_PREFETCH 8)
BENCH_WAIT_ANY_SMALL=$(posint BENCH_WAIT_ANY_SMALL 250)
BENCH_WAIT_ANY_LARGE=$(posint BENCH_WAIT_ANY_LARGE 1000)
BENCH_DAEMON_ROUNDS=$(posint BENCH_DAEMON_ROUNDS $((ROUNDS < 3 ? ROUNDS : 3)))
BENCH_DAEMON_TICKS=$(posint BENCH_DAEMON_TICKS 10000)
BENCH_DAEMON_JOBS=$(posint BENCH_DAEMON_JOBS 1000)
BENCH_DAEMON_QUERIES=$(posint BENCH_DAEMON_QUERIES 200)
BENCH_DAEMON_STARTS=$(posint BENCH_DAEMON_STARTS 200)
export BENCH_ROUNDS BENCH_POOL_TASKS BENCH_POOL_WORKERS BENCH_POOL_PREFETCH BENCH_WAIT_ANY_SMALL BENCH_WAIT_ANY_LARGE
export BENCH_DAEMON_ROUNDS BENCH_DAEMON_TICKS BENCH_DAEMON_JOBS BENCH_DAEMON_QUERIES BENCH_DAEMON_STARTS

command -v php >/dev/null 2>&1 || die "php not found (run: make setup)"
command -v cc >/dev/null 2>&1 || die "cc not found (run: make setup)"

# Section 3 keeps up to BENCH_WAIT_ANY_LARGE jobs unreaped, 2 file descriptors each, and the
# dispatcher of section 5 ~2 per sleeping job: raise the soft open-files limit (often 1024) as far
# as the hard limit allows. bench/wait_any.php says "not available" when it is still too low.
nofile_need=$((2 * (BENCH_WAIT_ANY_SMALL > BENCH_WAIT_ANY_LARGE ? BENCH_WAIT_ANY_SMALL : BENCH_WAIT_ANY_LARGE) + 64))
((nofile_need >= 3 * BENCH_DAEMON_JOBS + 64)) || nofile_need=$((3 * BENCH_DAEMON_JOBS + 64))
nofile_soft=$(ulimit -Sn)
if [[ $nofile_soft != unlimited ]] && ((nofile_soft < nofile_need)); then
    nofile_hard=$(ulimit -Hn)
    if [[ $nofile_hard == unlimited ]] || ((nofile_hard >= nofile_need)); then
        ulimit -Sn "$nofile_need" || true
    else
        ulimit -Sn "$nofile_hard" || true
    fi
fi

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

# stats <values...>: "median min max" of the values (1 decimal), or "n/a n/a n/a" when none.
stats() {
    (($# > 0)) || { echo "n/a n/a n/a"; return 0; }
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.1f %.1f %.1f\n", m, v[1], v[NR] }'
}
ratio() { # ratio <num> <den>
    if [[ $1 == n/a || $2 == n/a ]]; then echo n/a; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; fi
}
verdict() { # verdict <ratio> <limit>: met when ratio <= limit
    if [[ $1 == n/a ]]; then echo n/a; else awk -v r="$1" -v l="$2" 'BEGIN { print (r <= l ? "met" : "MISSED") }'; fi
}
mb() { [[ $1 == n/a ]] && echo n/a || awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
# row <side> <median> <min> <max> <samples> <ratio text>: one line of a table, as bench/report.php prints it.
row() {
    local range=n/a
    if [[ $2 != n/a ]]; then
        range="$3-$4"
        (($5 == ROUNDS)) || range="$range (n=$5)"
    fi
    printf '  %-40s %10s  %-23s %s\n' "$1" "$2" "$range" "$6"
}
header() { printf '  %-40s %10s  %-23s %s\n' side median min-max 'ratio of medians'; }

# ---------------------------------------------------------------------------------------------
echo
say "== 1. fork round trip: $ROUNDS rounds, sides interleaved (a b b' c, then c b' b a, ...)"

# Resident memory of bare_fork itself with no heap, subtracted so (c) matches PHP's RSS.
run "bare baseline" "$BARE" 0 1
BARE_BASE_KB=${OUT_RSS/n\/a/0}

TABLES=()
for size in 10 200; do
    if [[ $size -eq 10 ]]; then iters=$ITER_SMALL; else iters=$ITER_LARGE; fi
    declare -A US=([a]='' [b]='' [b2]='' [c]='') RSS=([a]=n/a [b]=n/a [c]=n/a)
    bare_mb=
    for ((r = 1; r <= ROUNDS; r++)); do
        if ((r % 2 == 1)); then order=(a b b2 c); else order=(c b2 b a); fi
        line=()
        for side in "${order[@]}"; do
            case $side in
            a)
                if [[ $HAVE_EXT -eq 1 ]]; then
                    run "forklift ${size}MB" php -d "extension=$EXT" bench/fork.php forklift "$size" "$iters"
                else
                    OUT_US=n/a OUT_RSS=n/a
                fi
                ;;
            b) run "pcntl ${size}MB" php bench/fork.php pcntl "$size" "$iters" ;;
            b2) run "pcntl-careful ${size}MB" php bench/fork.php pcntl-careful "$size" "$iters" ;;
            c)
                # at the resident memory the PHP process reached in round 1 (forklift, else pcntl);
                # round 1 runs a and b before c.
                if [[ -z $bare_mb ]]; then
                    target_kb=${RSS[a]}
                    [[ $target_kb == n/a ]] && target_kb=${RSS[b]}
                    [[ $target_kb == n/a ]] && target_kb=$((size * 1024))
                    bare_mb=$(((target_kb - BARE_BASE_KB + 512) / 1024))
                    if ((bare_mb < 0)); then bare_mb=0; fi
                fi
                run "bare ${size}MB" "$BARE" "$bare_mb" "$iters"
                ;;
            esac
            [[ $OUT_US == n/a ]] || US[$side]+=" $OUT_US"
            if [[ $side != b2 && ${RSS[$side]} == n/a ]]; then RSS[$side]=$OUT_RSS; fi
            if [[ $side == b2 ]]; then line+=("b' $OUT_US"); else line+=("$side $OUT_US"); fi
        done
        say "heap ${size}MB round $r/$ROUNDS (us per job): ${line[*]}"
    done

    # shellcheck disable=SC2086 # word splitting of the sample lists is intended
    {
        read -r a_med a_min a_max < <(stats ${US[a]})
        read -r b_med b_min b_max < <(stats ${US[b]})
        read -r b2_med b2_min b2_max < <(stats ${US[b2]})
        read -r c_med c_min c_max < <(stats ${US[c]})
        n_a=$(wc -w <<<"${US[a]}") n_b=$(wc -w <<<"${US[b]}") n_b2=$(wc -w <<<"${US[b2]}") n_c=$(wc -w <<<"${US[c]}")
    }
    ab=$(ratio "$a_med" "$b_med") ab2=$(ratio "$a_med" "$b2_med") ac=$(ratio "$a_med" "$c_med")
    TABLES+=("$(
        printf 'fork round trip at a %s MB heap (rss a/b/c %s/%s/%s MB): us per job, %d rounds x %d round trips, lower is better\n' \
            "$size" "$(mb "${RSS[a]}")" "$(mb "${RSS[b]}")" "$(mb "${RSS[c]}")" "$ROUNDS" "$iters"
        header
        row "(a) forklift" "$a_med" "$a_min" "$a_max" "$n_a" ""
        row "(b) pcntl, child exit()" "$b_med" "$b_min" "$b_max" "$n_b" "a/b  = $ab (goal <= 1.0: $(verdict "$ab" 1.0))"
        row "(b') pcntl, child kills itself" "$b2_med" "$b2_min" "$b2_max" "$n_b2" "a/b' = $ab2 (goal <= 1.0: $(verdict "$ab2" 1.0))"
        row "(c) bare C fork/_exit/waitpid, ${bare_mb:-?} MB" "$c_med" "$c_min" "$c_max" "$n_c" "a/c  = $ac (goal <= 1.3: $(verdict "$ac" 1.3))"
    )")
    unset US RSS
done
for t in "${TABLES[@]}"; do
    echo
    printf '%s\n' "$t"
done
echo "(per job = fork -> value back -> child reaped; b' is the fastest hand-written pcntl, whose child"
echo " skips PHP's shutdown; informational, speed is not asserted)"

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

section "== 2. pool" "$BENCH_POOL_TASKS tiny tasks per run, Forklift\\Pool default vs raw pcntl depth 1, prefetch: $BENCH_POOL_PREFETCH vs depth $BENCH_POOL_PREFETCH, $ROUNDS rounds interleaved" \
    bench/pool.php
echo "(informational, speed is not asserted)"

section "== 3. wait_any" "drain $BENCH_WAIT_ANY_SMALL and $BENCH_WAIT_ANY_LARGE finished jobs, $ROUNDS rounds interleaved (open-files limit $(ulimit -Sn))" \
    bench/wait_any.php
echo "(informational, speed is not asserted)"

section "== 4. timeouts" "$TIMEOUT_KILL jobs killed at their timeout, $TIMEOUT_INPROC in-process timeouts each" \
    bench/timeouts.php "$TIMEOUT_KILL" "$TIMEOUT_INPROC"
echo "(latency = how long past the deadline; informational, speed is not asserted)"

# bench/daemon.php starts its sides as subprocesses (and bin/forklift run) with this extension.
export FORKLIFT_EXTENSION=$EXT
section "== 5. daemon" "timer drift, CPU while $BENCH_DAEMON_JOBS jobs sleep, status queries, job start latency; $BENCH_DAEMON_ROUNDS rounds interleaved" \
    bench/daemon.php
echo "(informational, speed is not asserted)"

# 6. Messenger consumers on one Redis transport (bench/messenger.php, bench/messenger/app.php):
#    BENCH_MESSENGER_MESSAGES tiny messages put on the stream before the consumers start, msgs/s
#    from their start to the last one exited, and first -> last message handled, of
#      (a) bin/forklift consume APP async --limit=N (a fresh child per message)
#      (b) the same with --workers=2
#      (c) two plain Symfony Workers (messenger:consume) with a message limit of N/2 each
#      (d) one plain Worker (for the per-message overhead of a child, 1/rate(a) - 1/rate(d))
#      (e) bin/forklift consume --prefork --workers=2 (long-lived workers, no fork per message)
#    BENCH_MESSENGER_ROUNDS rounds, the order rotated and reversed every round; a throw-away
#    redis-server on loopback (Debian's redis-server, php8.2-redis, Symfony Messenger 5.4).
#    env: BENCH_MESSENGER_MESSAGES [2000]; BENCH_MESSENGER_ROUNDS [3, or BENCH_ROUNDS when smaller]
#    (a default run takes about 35 s on 2 cores).
BENCH_MESSENGER_MESSAGES=$(posint BENCH_MESSENGER_MESSAGES 2000)
BENCH_MESSENGER_ROUNDS=$(posint BENCH_MESSENGER_ROUNDS $((ROUNDS < 3 ? ROUNDS : 3)))
export BENCH_MESSENGER_MESSAGES BENCH_MESSENGER_ROUNDS
section "== 6. messenger" "$BENCH_MESSENGER_MESSAGES tiny messages on Redis per run, forklift consume (--workers=1, 2, --prefork) vs plain Messenger Workers (2 and 1 processes); $BENCH_MESSENGER_ROUNDS rounds interleaved" \
    bench/messenger.php
echo "(informational, speed is not asserted)"

exit "$FAILED"
