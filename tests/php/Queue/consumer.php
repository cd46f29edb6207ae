<?php

/**
 * A consumer as its own process, for the tests that kill one with SIGKILL:
 * php consumer.php beanstalkd|redis PORT QUEUE LOG PIDFILE [CLAIM_IDLE]
 * Runs a Daemon with a Consumer (workers: 2) whose handler is RecordingHandler(LOG).
 */

declare(strict_types=1);

require dirname(__DIR__, 3) . '/php/autoload.php';
require __DIR__ . '/RecordingHandler.php';

[, $kind, $port, $queue, $log, $pidFile] = $argv;
$broker = match ($kind) {
    'beanstalkd' => new Forklift\Queue\Beanstalkd('127.0.0.1', (int) $port, tube: $queue),
    'redis' => new Forklift\Queue\RedisStream(static function () use ($port): Redis {
        $r = new Redis();
        $r->connect('127.0.0.1', (int) $port, 5.0);

        return $r;
    }, $queue, claimIdle: (float) ($argv[6] ?? 60)),
};
$daemon = new Forklift\Daemon('queue-test', pidFile: $pidFile, stopTimeout: 5.0);
(new Forklift\Queue\Consumer($broker, new Forklift\Tests\Queue\RecordingHandler($log), name: 'q', workers: 2, maxAttempts: 5, retryDelay: 0.0, poll: 0.05))->attach($daemon);
exit($daemon->run());
