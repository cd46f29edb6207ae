<?php

/**
 * `make demo`: six jobs forked at once, each ending a different way, and what the parent learns
 * about each. Nothing here catches errors by hand: the blackbox brings them back.
 */

declare(strict_types=1);

use Forklift\JobResult;

use function Forklift\fork;
use function Forklift\wait_any;

if (!extension_loaded('forklift')) {
    fwrite(STDERR, "Load the extension: php -d extension=target/release/libforklift.so demo/demo.php\n");
    exit(1);
}
// The jobs' errors are shown from their records below, not printed as they happen.
ini_set('display_errors', '0');
ini_set('log_errors', '0');

$jobs = [
    'returns a value' => fork(function (): array {
        $orders = range(1, 250_000);
        return ['orders' => count($orders), 'total' => array_sum($orders)];
    }),
    'warns, then returns' => fork(function (): string {
        $config = ['region' => 'eu'];
        trigger_error('catalog feed is 3 hours old', E_USER_WARNING);
        return $config['currency'] ?? 'EUR'; // PHP stays quiet here: ?? is not an error
    }),
    'dies of a fatal error' => fork(function (): void {
        trigger_error('ledger out of balance, refusing to post', E_USER_ERROR);
    }),
    'runs out of memory' => fork(function (): void {
        ini_set('memory_limit', '32M');
        $rows = [];
        while (true) {
            $rows[] = str_repeat('row', 10_000);
        }
    }),
    'hangs, timed out' => fork(function (): void {
        sleep(60); // a stuck API call
    }, timeout: 0.5),
    'killed by a signal' => fork(function (): void {
        trigger_error('starting a long import', E_USER_NOTICE);
        posix_kill(getmypid(), SIGKILL);
    }),
];

printf("parent %d forked %d jobs; results as they finish:\n\n", getmypid(), count($jobs));
printf("%-22s %-7s %-9s %-10s %-9s %-9s %s\n", 'job', 'pid', 'outcome', 'duration', 'peak mem', 'max rss', 'value / cause');
echo str_repeat('-', 110), "\n";

$results = [];
while ($jobs) {
    $name = wait_any($jobs);
    $result = $jobs[$name]->wait();
    unset($jobs[$name]);
    $results[$name] = $result;
    printf(
        "%-22s %-7d %-9s %-10s %-9s %-9s %s\n",
        $name,
        $result->pid(),
        $result->outcome(),
        sprintf('%.1f ms', $result->duration() * 1000),
        $result->peakMemory() === null ? '-' : sprintf('%.1f MB', $result->peakMemory() / 1048576),
        sprintf('%.1f MB', $result->maxRss() / 1048576),
        $result->ok() ? json_encode($result->value()) : $result->cause()
    );
}

echo "\nerror records the parent received:\n";
foreach ($results as $name => $result) {
    /** @var JobResult $result */
    foreach ($result->errors() as $error) {
        printf("  %-22s %s\n", $name, $error);
    }
}
echo "\nthe parent (pid ", getmypid(), ") is still alive; no child is left running or unreaped.\n";
