<?php
/*
 * The APP.php that bench/daemon.php runs with `bin/forklift run` (sections 2 and 3 of the daemon
 * benchmark): a daemon that starts BENCH_DAEMON_JOBS parallel runs of one job at once, each of
 * which sleeps BENCH_DAEMON_JOB_SLEEP seconds. The runs are asked for with start() while this
 * file is loaded (in the dispatcher, before its loop starts), so that nothing else in the daemon
 * ticks: no timer, no cron line; the loop then only waits for the runs to end.
 *
 * When the last of them has started, the dispatcher writes "all-started PID" on its stdout (a
 * pipe bench/daemon.php reads): the benchmark waits on that line, not on a sleep.
 *
 * env: BENCH_DAEMON_PID_FILE (required; the status socket is beside it), BENCH_DAEMON_JOBS
 *      [1000], BENCH_DAEMON_JOB_SLEEP [60]: longer than starting them (~0.6 s), the 2 s CPU window
 *      and the status queries (~1 s) take together, so that all of them run throughout; the
 *      benchmark then stops the daemon with `bin/forklift stop` (the runs get SIGTERM).
 */

declare(strict_types=1);

$pidFile = getenv('BENCH_DAEMON_PID_FILE');
if ($pidFile === false || $pidFile === '') {
    throw new RuntimeException('bench/daemon_app.php: set BENCH_DAEMON_PID_FILE');
}
$jobs = (int) (getenv('BENCH_DAEMON_JOBS') ?: 1000);
$sleep = (int) (getenv('BENCH_DAEMON_JOB_SLEEP') ?: 60);

// stopTimeout: 0.2: `bin/forklift stop` ends the sleeping runs (SIGTERM) instead of waiting for them.
$d = new Forklift\Daemon('bench-sleepers', pidFile: $pidFile, stopTimeout: 0.2);
$d->job('sleeper', fn () => sleep($sleep), parallel: true, overlap: true);

$started = 0;
$d->onJobStart(function (Forklift\JobRun $run) use (&$started, $jobs) {
    if (++$started === $jobs) {
        fwrite(STDOUT, 'all-started ' . getmypid() . "\n");
    }
});
for ($i = 0; $i < $jobs; $i++) {
    if ($d->start('sleeper') === null) {
        throw new RuntimeException("bench/daemon_app.php: start() refused run $i of the sleeper job");
    }
}

return $d;
