<?php
/*
 * Draining finished jobs with Forklift\wait_any: does the cost per job stay flat as the number of
 * jobs grows (O(n) in all), or grow with it (O(n^2))?
 *
 * One run at N jobs: fork N jobs that return at once (fn () => 1), wait until every one of them has
 * exited (its /proc/PID/stat state is 'Z', or it is gone), then time only
 *     while ($jobs) { $k = Forklift\wait_any($jobs); unset($jobs[$k]); }
 * with hrtime (wall) and getrusage (the parent's user + system CPU). Afterwards every job's result
 * is checked (value 1). Each round runs N small and N large, interleaved (order reversed every
 * other round); the table shows us per job, median and min-max across rounds, and the ratio of
 * the large N's median to the small N's: about 1 means flat, about large/small means O(n^2).
 *
 * usage: php -d extension=target/release/libforklift.so bench/wait_any.php
 * env:   BENCH_ROUNDS (default 5)  BENCH_WAIT_ANY_SMALL (default 250)  BENCH_WAIT_ANY_LARGE (default 1000)
 * Every job holds file descriptors while it is not reaped (its socket and pidfd): the open-files
 * limit must allow about 2 per job (bench/run.sh raises the soft limit up to the hard limit).
 * Informational: speed is not asserted. Exits 1 when a run goes wrong, 2 on bad usage, 3 when
 * Forklift\wait_any is not available or the open-files limit is too low.
 */

declare(strict_types=1);

require __DIR__ . '/report.php';

/** The state letter of /proc/PID/stat ('R', 'S', 'Z', ...), or null when the process is gone. */
function proc_state(int $pid): ?string
{
    $stat = @file_get_contents("/proc/$pid/stat");
    if ($stat === false) {
        return null;
    }
    // "pid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'.
    $close = strrpos($stat, ')');
    return $close === false ? null : ($stat[$close + 2] ?? null);
}

/** CPU time (user + system) of this process so far, in microseconds. */
function cpu_us(): float
{
    $u = getrusage();
    return $u['ru_utime.tv_sec'] * 1e6 + $u['ru_utime.tv_usec'] + $u['ru_stime.tv_sec'] * 1e6 + $u['ru_stime.tv_usec'];
}

/** @return array{wall: float, cpu: float} us per job of the drain loop over $n finished jobs */
function drain_once(int $n): array
{
    $jobs = [];
    $all = []; // a separate array (not a copy of $jobs), so no copy happens inside the timed loop
    for ($i = 0; $i < $n; $i++) {
        $p = Forklift\fork(fn () => 1);
        $jobs[$i] = $p;
        $all[$i] = $p;
    }

    // Wait until every job has exited: a zombie, or already reaped by a Forklift call.
    $deadline = hrtime(true) + 60_000_000_000;
    foreach ($all as $i => $p) {
        $pid = $p->pid();
        while (($state = proc_state($pid)) !== null && $state !== 'Z') {
            if (hrtime(true) > $deadline) {
                bench_fail("job $i (pid $pid) has not exited after 60 s (state $state)");
            }
            usleep(200);
        }
    }

    $calls = 0;
    $cpu0 = cpu_us();
    $t0 = hrtime(true);
    while ($jobs) {
        $k = Forklift\wait_any($jobs);
        unset($jobs[$k]);
        if (++$calls > $n) {
            break; // wait_any returned a key it was not given: checked below
        }
    }
    $t1 = hrtime(true);
    $cpu1 = cpu_us();

    if ($calls !== $n || $jobs !== []) {
        bench_fail("wait_any: $calls calls for $n jobs, " . count($jobs) . ' left undrained');
    }
    foreach ($all as $i => $p) {
        $r = $p->wait();
        if (!$r->ok() || $r->value() !== 1) {
            bench_fail("job $i: wrong result: $r");
        }
    }
    return ['wall' => ($t1 - $t0) / 1e3 / $n, 'cpu' => ($cpu1 - $cpu0) / $n];
}

if (!function_exists('Forklift\wait_any') || !function_exists('Forklift\fork')) {
    fwrite(STDERR, "Forklift\\wait_any is not available; run with -d extension=target/release/libforklift.so\n");
    exit(3);
}

$rounds = env_int('BENCH_ROUNDS', 5, 1);
$small = env_int('BENCH_WAIT_ANY_SMALL', 250, 1);
$large = env_int('BENCH_WAIT_ANY_LARGE', 1000, 1);

$limit = function_exists('posix_getrlimit') ? (posix_getrlimit()['soft openfiles'] ?? 'unlimited') : 'unlimited';
$need = 2 * max($small, $large) + 64;
if ($limit !== 'unlimited' && (int) $limit < $need) {
    fwrite(STDERR, "the open-files limit is $limit, $need are needed for " . max($small, $large)
        . " unreaped jobs (raise it: ulimit -n $need, or run under prlimit --nofile=$need)\n");
    exit(3);
}

$sizes = array_values(array_unique([$small, $large]));
$samples = [];
foreach ($sizes as $n) {
    $samples[$n] = ['wall' => [], 'cpu' => []];
}
drain_once(min(50, $small)); // warm up
for ($r = 0; $r < $rounds; $r++) {
    $line = [];
    foreach (round_order($sizes, $r) as $n) {
        $t = drain_once($n);
        $samples[$n]['wall'][] = $t['wall'];
        $samples[$n]['cpu'][] = $t['cpu'];
        $line[] = sprintf('N=%d %.2f/%.2f', $n, $t['wall'], $t['cpu']);
    }
    printf("  round %d/%d (us per job, wall/cpu): %s\n", $r + 1, $rounds, implode('  ', $line));
}

$rows = [];
foreach (['wall' => 'wall', 'cpu' => 'parent CPU'] as $kind => $what) {
    $base = median($samples[$small][$kind]);
    foreach ($sizes as $n) {
        $ratio = '';
        if ($n !== $small) {
            $x = $base > 0 ? median($samples[$n][$kind]) / $base : INF;
            $ratio = sprintf('%.2fx vs N=%d (flat: ~1x; O(n^2): ~%.0fx)', $x, $small, $n / $small);
        } elseif ($small !== $large) {
            $ratio = 'baseline';
        }
        $rows[] = [sprintf('%s, N=%d', $what, $n), $samples[$n][$kind], $ratio];
    }
}
print_table(
    sprintf('wait_any drain: us per finished job, %d rounds interleaved (lower is better)', $rounds),
    $rows,
    2
);
