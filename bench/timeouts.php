<?php
/*
 * Timeout latency benchmark: how late does a deadline take effect?
 *
 *   (a) kill:       Forklift\fork(fn () => sleep(30), timeout: T)->wait()
 *                   latency = (when wait() returned - when fork() was called) - T
 *   (b) in-process: Forklift\timeout(D, $fn) until the TimeoutException is caught
 *                   latency = (when it was caught - when timeout() was called) - D,
 *                   for a CPU loop and for a job blocked in usleep(1_000_000)
 *
 * usage: php -d extension=.../libforklift.so timeouts.php [kill_jobs] [inproc_runs]
 *        (defaults 200 and 500; T = 50 ms, D = 5 ms)
 * prints a table of p50 / p99 / max in ms, and the goals (kill p99 < 10 ms, in-process p99 < 2 ms).
 *
 * Informational: the goals are not asserted. Exits 0 when every run behaved (goals met or not),
 * 1 when a run went wrong (a job that did not time out, a callable that returned), 2 on bad usage,
 * 3 when Forklift's timeouts are not available (no extension, or an extension without them).
 */

declare(strict_types=1);

const KILL_TIMEOUT = 0.05;
const INPROC_TIMEOUT = 0.005;
const KILL_GOAL_MS = 10.0;
const INPROC_GOAL_MS = 2.0;

function fail(string $message, int $code = 1): never
{
    fwrite(STDERR, $message . "\n");
    exit($code);
}

function count_arg(int $i, int $default): int
{
    global $argv;
    if (!isset($argv[$i])) {
        return $default;
    }
    if (!ctype_digit($argv[$i]) || (int) $argv[$i] < 1) {
        fail("usage: php timeouts.php [kill_jobs] [inproc_runs] (positive integers; got '{$argv[$i]}')", 2);
    }
    return (int) $argv[$i];
}

/** @param list<float> $ms  @return array{p50: float, p99: float, max: float} nearest-rank percentiles */
function summary(array $ms): array
{
    sort($ms);
    $rank = fn (float $p) => $ms[max(0, (int) ceil($p * count($ms)) - 1)];
    return ['p50' => $rank(0.50), 'p99' => $rank(0.99), 'max' => $ms[count($ms) - 1]];
}

/** (a) Latency of the parent's wall-clock kill, in ms, one entry per job. */
function kill_latencies(int $n): array
{
    $ms = [];
    for ($i = 0; $i < $n; $i++) {
        $started = hrtime(true);
        $result = Forklift\fork(fn () => sleep(30), timeout: KILL_TIMEOUT)->wait();
        $ended = hrtime(true);
        if ($result->outcome() !== 'timeout') {
            fail("kill run $i: expected outcome timeout, got {$result->outcome()}: $result");
        }
        $ms[] = (($ended - $started) / 1e9 - KILL_TIMEOUT) * 1e3;
    }
    return $ms;
}

/** (b) Latency of Forklift\timeout() for `$fn`, in ms, one entry per run. */
function inproc_latencies(int $n, Closure $fn, string $label): array
{
    $ms = [];
    for ($i = 0; $i < $n; $i++) {
        $started = hrtime(true);
        try {
            Forklift\timeout(INPROC_TIMEOUT, $fn);
            fail("$label run $i: the callable returned instead of timing out");
        } catch (Forklift\TimeoutException) {
            $caught = hrtime(true);
        }
        $ms[] = (($caught - $started) / 1e9 - INPROC_TIMEOUT) * 1e3;
    }
    return $ms;
}

if (!function_exists('Forklift\timeout') || !function_exists('Forklift\fork')) {
    fail('Forklift\fork / Forklift\timeout not available (load the extension: php -d extension=.../libforklift.so)', 3);
}
$killJobs = count_arg(1, 200);
$inprocRuns = count_arg(2, 500);

$rows = [
    ['kill: fork(sleep(30), timeout: 50ms)->wait()', $killJobs, summary(kill_latencies($killJobs)), KILL_GOAL_MS],
    ['in-process: timeout(5ms, CPU loop)', $inprocRuns, summary(inproc_latencies($inprocRuns, function () {
        while (true) {
        }
    }, 'CPU loop')), INPROC_GOAL_MS],
    ['in-process: timeout(5ms, usleep(1 s))', $inprocRuns, summary(inproc_latencies($inprocRuns, function () {
        usleep(1_000_000);
    }, 'usleep')), INPROC_GOAL_MS],
];

printf("%-46s %6s %9s %9s %9s  %s\n", 'deadline (latency past it, ms)', 'runs', 'p50', 'p99', 'max', 'goal');
foreach ($rows as [$label, $runs, $s, $goal]) {
    printf(
        "%-46s %6d %9.3f %9.3f %9.3f  p99 < %g ms: %s\n",
        $label, $runs, $s['p50'], $s['p99'], $s['max'], $goal, $s['p99'] < $goal ? 'met' : 'MISSED'
    );
}
