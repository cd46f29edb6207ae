<?php

declare(strict_types=1);

namespace Forklift\Tests\Messenger;

use Forklift\Daemon;
use Forklift\InvalidArgumentException;
use Forklift\Messenger\Consumers;
use Forklift\Messenger\Worker;
use Forklift\Tests\Support\CliProcess;
use Forklift\Tests\Support\DaemonKit;
use Forklift\Tests\Support\Redis;
use Symfony\Component\Messenger\Event\WorkerRunningEvent;
use Symfony\Component\Messenger\Event\WorkerStartedEvent;
use Symfony\Component\Messenger\Event\WorkerStoppedEvent;
use Symfony\Component\Messenger\MessageBus;
use Symfony\Component\Messenger\Stamp\ErrorDetailsStamp;

require_once __DIR__ . '/ConsumerTestCase.php';

/**
 * forklift:consume on Symfony's Redis transport (streams) against a real redis-server on
 * loopback; and what does not depend on the transport: priority, limits, stop-workers --wait,
 * TERM, titles, metrics, kill -9, bad input.
 */
final class RedisConsumerTest extends ConsumerTestCase
{
    private static ?Redis $redis = null;
    private string $prefix;
    /** The transports' redeliver_timeout, seconds. */
    private int $redeliver = 3600;

    public static function setUpBeforeClass(): void
    {
        self::$redis = new Redis();
    }

    public static function tearDownAfterClass(): void
    {
        self::$redis?->stop();
        self::$redis = null;
    }

    protected function setUp(): void
    {
        parent::setUp();
        $this->prefix = bin2hex(random_bytes(4));
    }

    protected function dsn(string $name): string
    {
        return self::$redis->dsn() . "/$this->prefix-$name/g/c?redeliver_timeout=$this->redeliver&claim_interval=200";
    }

    public function test_receivers_are_consumed_in_priority_order(): void
    {
        $app = $this->app(['ui', 'import', 'maintenance', 'failed']);
        $this->send($app, 'maintenance', new Job('ok', 'm1'), new Job('ok', 'm2'));
        $this->send($app, 'import', new Job('ok', 'i1'), new Job('ok', 'i2'));
        $this->send($app, 'ui', new Job('ok', 'u1'), new Job('ok', 'u2'));
        $this->consume($app, ['ui', 'import', 'maintenance'], 6, ['workers' => 1]);

        $this->assertSame(['u1', 'u2', 'i1', 'i2', 'm1', 'm2'], array_column($this->handled(), 'tag'));
    }

    public function test_limit_is_exact_with_several_workers(): void
    {
        $app = $this->app();
        for ($i = 0; $i < 10; $i++) {
            $this->send($app, 'async', new Job('ok', "t$i"));
        }
        $this->consume($app, ['async'], 4, ['workers' => 3]);

        $this->assertCount(4, $this->handled());
        $this->assertCount(6, $this->drain($app->receivers['async']), 'the rest is left in the transport');
    }

    public function test_workers_run_messages_at_once(): void
    {
        $app = $this->app();
        $this->send($app, 'async', new Job('slow', 's1'), new Job('slow', 's2'), new Job('slow', 's3'), new Job('ok', 'last'));
        $consumer = new CliProcess(['consume', __DIR__ . '/app.php', 'async', '--workers=3', '--sleep=0.05'], ['FORKLIFT_RUN_DIR' => $this->dir]);
        // All three start before any ends: they end only once released.
        $this->waitFor(fn ($lines) => \count(array_filter($lines, static fn ($h) => $h['action'] === 'slow')) === 3);
        $this->assertNotContains('last', array_column($this->handled(), 'tag'), 'the fourth waits for a free worker');
        $pids = array_column($this->handled(), 'pid');
        $this->assertCount(3, array_unique($pids));
        $this->assertNotContains($consumer->pid(), $pids);
        touch("$this->log.release");
        $this->waitFor(fn ($lines) => \in_array('last', array_column($lines, 'tag'), true));
        $consumer->kill(SIGTERM);
        $this->assertSame(0, $consumer->wait(10), $consumer->log);
        $this->assertCount(3, array_filter($this->handled(), static fn ($h) => $h['action'] === 'slow-done'));
    }

    public function test_prefork_workers_serve_many_messages_and_a_dying_one_fails_only_its_own(): void
    {
        $app = $this->app(retries: 0);
        $messages = [];
        foreach (range(1, 12) as $i) {
            $messages[] = new Job(match ($i) { 4 => 'segfault', 8 => 'oom', 10 => 'hang', default => 'ok' }, "p$i");
        }
        $this->send($app, 'async', ...$messages);
        $w = $this->consume($app, ['async'], 12, ['workers' => 2, 'prefork' => true, 'maxMessagesPerWorker' => 3, 'timeout' => 1.0, 'grace' => 0.2]);

        $this->assertCount(12, $this->handled(), 'every message was handled once');
        $perPid = array_count_values(array_column($this->handled(), 'pid'));
        $this->assertLessThan(12, \count($perPid), 'workers served several messages each');
        $this->assertLessThanOrEqual(3, max($perPid), 'a worker is replaced after 3 messages');
        $this->assertNotContains(getmypid(), array_keys($perPid));
        $failed = [];
        foreach ($this->drain($app->receivers['failed']) as $e) {
            $failed[$e->getMessage()->tag] = $e->last(ErrorDetailsStamp::class)->getExceptionMessage();
        }
        ksort($failed);
        $this->assertSame(['p10', 'p4', 'p8'], array_keys($failed), $this->logger->text());
        $this->assertStringContainsString('SIGSEGV', $failed['p4']);
        $this->assertStringContainsString('out of memory', $failed['p8']);
        $this->assertStringContainsString('timed out', $failed['p10']);
        $this->assertSame([], $this->drain($app->receivers['async']));
    }

    public function test_time_and_memory_limits_stop_as_messengers_do(): void
    {
        $app = $this->app();
        $stopped = 0;
        $app->events->addListener(WorkerStoppedEvent::class, static function () use (&$stopped): void {
            ++$stopped;
        });
        $app->events->addSubscriber(new \Symfony\Component\Messenger\EventListener\StopWorkerOnTimeLimitListener(1));
        $t = microtime(true);
        (new Worker(['async' => $app->receivers['async']], $app->bus, $app->events, $this->logger))->run(['sleep' => 20_000]);
        $this->assertSame(1, $stopped);
        $this->assertGreaterThanOrEqual(1.0, microtime(true) - $t, 'not before its time limit');

        $app = $this->app();
        $this->send($app, 'async', new Job('ok', 'one'), new Job('ok', 'two'));
        $app->events->addSubscriber(new \Symfony\Component\Messenger\EventListener\StopWorkerOnMemoryLimitListener(1024));
        (new Worker(['async' => $app->receivers['async']], $app->bus, $app->events, $this->logger))->run(['sleep' => 20_000]);
        $this->assertSame(['one'], array_column($this->handled(), 'tag'), 'over the memory limit: stops after the message it handles');
    }

    public function test_status_titles_and_metrics_while_a_message_runs(): void
    {
        $app = $this->app();
        $this->send($app, 'async', new Job('slow', 'slow'), new Job('ok', 'fine'), new Job('throw', 'bad'), new Other('other'));
        $consumer = new CliProcess(['consume', __DIR__ . '/app.php', 'async', '--workers=2', '--sleep=0.05'], ['FORKLIFT_RUN_DIR' => $this->dir]);
        // slow runs; fine, bad (twice: one retry) and other go through the second worker.
        $this->waitFor(fn ($lines) => \count($lines) === 5);
        [$pidFile] = Consumers::running();
        $this->assertSame(Consumers::pidFile('consume', $consumer->pid()), $pidFile);
        $deadline = microtime(true) + 10;
        do {
            $metrics = \Forklift\Tests\Support\forklift_cli(['metrics', "--pid-file=$pidFile"])['out'];
        } while (!str_contains($metrics, 'outcome="failed"') && microtime(true) < $deadline);
        $status = json_decode(\Forklift\Tests\Support\forklift_cli(['status', '--json', "--pid-file=$pidFile"])['out'], true);
        $this->assertCount(1, $status['running']);
        $run = $status['running'][0];
        $this->assertSame(['async', Job::class], [$run['job'], $run['label']]);
        $this->assertSame('forklift: consume parallel - async - ' . Job::class, trim(str_replace("\0", ' ', (string) file_get_contents("/proc/{$run['pid']}/cmdline"))));
        $this->assertStringContainsString('forklift_messages_total{daemon="consume",class="Forklift\\\\Tests\\\\Messenger\\\\Job",outcome="handled",transport="async"} 1', $metrics);
        $this->assertStringContainsString('class="Forklift\\\\Tests\\\\Messenger\\\\Job",outcome="retried",transport="async"} 1', $metrics);
        $this->assertStringContainsString('class="Forklift\\\\Tests\\\\Messenger\\\\Job",outcome="failed",transport="async"} 1', $metrics);
        $this->assertStringContainsString('class="Forklift\\\\Tests\\\\Messenger\\\\Other",outcome="handled",transport="async"} 1', $metrics);
        $this->assertMatchesRegularExpression('/forklift_message_seconds_count\{daemon="consume",class="[^"]+Job",transport="async"\} 3/', $metrics);
        $listed = \Forklift\Tests\Support\forklift_cli(['consumers']);
        $this->assertMatchesRegularExpression('/consumer-consume-' . $consumer->pid() . '\.pid\s+' . $consumer->pid() . '\s+running\s+async\s+1\s+2\s+1\s+1/', $listed['out']);
        touch("$this->log.release");
        $consumer->kill(SIGTERM);
        $this->assertSame(0, $consumer->wait(10), $consumer->log);
        $this->assertSame([], Consumers::running(), 'its pid file is gone after it stopped');
    }

    public function test_stop_workers_wait_returns_once_consumers_have_exited(): void
    {
        putenv("FORKLIFT_TEST_CACHE_DIR=$this->dir/cache");
        // The plain messenger:consume worker has a transport of its own.
        $app = $this->app(['async', 'plain', 'failed']);
        $this->send($app, 'async', new Job('slow', 'long'));
        $env = ['FORKLIFT_RUN_DIR' => $this->dir, 'FORKLIFT_TEST_CACHE_DIR' => "$this->dir/cache"];
        $consumer = new CliProcess(['consume', __DIR__ . '/app.php', 'async', '--sleep=0.05', '-vv'], $env);
        $plain = new CliProcess([], $env, [PHP_BINARY, __DIR__ . '/plain-consume.php', '--']);
        $this->assertNotNull($plain->waitFor('/^ready/'), $plain->log);
        $this->waitForLine('long', 'slow');
        $this->assertCount(1, Consumers::running(), $consumer->log . $plain->log);

        $stopper = new CliProcess(['stop-workers', __DIR__ . '/app.php', '--wait']);
        // It waits while the message runs; the message ends when released.
        $this->assertNull($stopper->wait(0.3), 'stop-workers --wait is still waiting for the running message');
        touch("$this->log.release");
        $this->assertSame(0, $stopper->wait(30), $stopper->log);
        $this->assertFalse(DaemonKit::alive($consumer->pid()), 'the Forklift consumer has exited when stop-workers returns');
        $this->assertSame(0, $consumer->wait(5), $consumer->log);
        $this->assertSame(['slow', 'slow-done'], array_column($this->handled(), 'action'), 'its running message finished');
        $this->assertSame([], $this->drain($app->receivers['async']), 'and was acked');
        $this->assertSame(0, $plain->wait(10), 'the plain messenger:consume worker stopped on the restart signal: ' . $plain->log);
    }

    public function test_term_lets_the_running_message_finish(): void
    {
        $app = $this->app();
        $this->send($app, 'async', new Job('slow', 'long'), new Job('ok', 'next'));
        // -vv: the daemon's info lines (without a logger of the application's, a console logger).
        $consumer = new CliProcess(['consume', __DIR__ . '/app.php', 'async', '--sleep=0.05', '-vv'], ['FORKLIFT_RUN_DIR' => $this->dir]);
        $this->waitForLine('long', 'slow');
        $consumer->kill(SIGTERM);
        $this->assertNotNull($consumer->waitFor('/stopping \(SIGTERM\)/'), $consumer->log);
        touch("$this->log.release");
        $this->assertSame(0, $consumer->wait(10), $consumer->log);
        $this->assertSame(['long', 'long'], array_column($this->handled(), 'tag'), 'the running one finished; no new one was started');
        $left = $this->drain($app->receivers['async']);
        $this->assertSame(['next'], array_map(static fn ($e) => $e->getMessage()->tag, $left));
    }

    public function test_a_consumer_killed_with_kill_9_loses_nothing(): void
    {
        // Its pending message is claimed by the next consumer after 1 s.
        $this->redeliver = 1;
        $app = $this->app();
        $this->send($app, 'async', new Job('slow', 'inflight'));
        $consumer = new CliProcess(['consume', __DIR__ . '/app.php', 'async', '--sleep=0.05'], ['FORKLIFT_RUN_DIR' => $this->dir]);
        $line = $this->waitForLine('inflight', 'slow');
        $consumer->kill(SIGKILL);
        $consumer->wait(5);
        // The child dies with its consumer (it is watched by pid: PR_SET_PDEATHSIG).
        $this->assertTrue(DaemonKit::waitGone([$line['pid']], 5), 'the orphaned child is gone');
        touch("$this->log.release");
        // Another consumer claims the pending message after the transport's redeliver timeout.
        $this->consume($app, ['async'], 1);
        $this->assertSame(['inflight', 'inflight', 'inflight'], array_column($this->handled(), 'tag'));
        $this->assertSame('slow-done', $this->handled()[2]['action']);
    }

    public function test_a_receiver_that_returns_a_batch_still_keeps_to_workers_and_limit(): void
    {
        // Symfony's in-memory transport returns every message at each get() (as SQS returns up to 10).
        $memory = new \Symfony\Component\Messenger\Transport\InMemoryTransport();
        foreach (range(1, 6) as $i) {
            $memory->send(new \Symfony\Component\Messenger\Envelope(new Job('slow', "b$i")));
        }
        touch("$this->log.release");
        $app = $this->app();
        $most = 0;
        $app->events->addListener(\Symfony\Component\Messenger\Event\WorkerMessageReceivedEvent::class, function (\Symfony\Component\Messenger\Event\WorkerMessageReceivedEvent $e) use (&$most): void {
            $running = \count($this->handled()) - 2 * \count(array_filter($this->handled(), static fn ($h) => $h['action'] === 'slow-done'));
            $most = max($most, $running + 1);
        });
        $w = new Worker(['memory' => $memory], $app->bus, $app->events, $this->logger, workers: 1);
        $limit = new \Symfony\Component\Messenger\EventListener\StopWorkerOnMessageLimitListener(3);
        $app->events->addSubscriber($limit);
        $w->run(['sleep' => 20_000, 'limit' => 3]);

        $this->assertSame(['b1', 'b2', 'b3'], array_values(array_unique(array_column($this->handled(), 'tag'))), 'three handled, in order');
        $this->assertSame(1, $most, 'one at a time');
        $this->assertCount(3, $memory->getAcknowledged());
    }

    public function test_a_received_listener_that_throws_fails_that_message_and_stop_in_it_handles_it_first(): void
    {
        $app = $this->app(retries: 0);
        $this->send($app, 'async', new Job('ok', 'first'), new Job('ok', 'second'), new Job('ok', 'third'));
        $seen = 0;
        $app->events->addListener(\Symfony\Component\Messenger\Event\WorkerMessageReceivedEvent::class, static function ($e) use (&$seen): void {
            if (++$seen === 2) {
                throw new \DomainException('the listener refused the second');
            }
        });
        $w = null;
        $app->events->addListener(\Symfony\Component\Messenger\Event\WorkerMessageReceivedEvent::class, static function () use (&$seen, &$w): void {
            if ($seen === 3) {
                $w->stop(); // Messenger's rule: this message is still handled, then the worker stops
            }
        });
        $w = new Worker(['async' => $app->receivers['async']], $app->bus, $app->events, $this->logger, workers: 1);
        $w->run(['sleep' => 20_000]);

        $this->assertSame(['first', 'third'], array_column($this->handled(), 'tag'));
        $failed = $this->drain($app->receivers['failed']);
        $this->assertCount(1, $failed);
        $this->assertSame('second', $failed[0]->getMessage()->tag);
        $this->assertSame('DomainException', $failed[0]->last(ErrorDetailsStamp::class)->getExceptionClass());
        $this->assertSame([], $this->drain($app->receivers['async']));
    }

    public function test_an_exception_that_would_run_code_when_revived_stays_in_the_child(): void
    {
        $app = $this->app(retries: 0);
        $this->send($app, 'async', new Job('wakeup', 'w'), new Job('ok', 'after'));
        $this->consume($app, ['async'], 2);

        $failed = $this->drain($app->receivers['failed']);
        $this->assertCount(1, $failed);
        $d = $failed[0]->last(ErrorDetailsStamp::class);
        $this->assertSame(\Forklift\Messenger\RemoteHandlerException::class, $d->getExceptionClass());
        $this->assertStringContainsString(WakeupException::class . ': revived in the consumer', $d->getExceptionMessage());
        $this->assertSame(['w', 'after'], array_column($this->handled(), 'tag'), 'the consumer lived on');
    }

    public static function modes(): array
    {
        return ['a child per message' => [[]], 'prefork' => [['--prefork']]];
    }

    /** @dataProvider modes */
    public function test_a_message_still_running_at_the_stop_timeout_is_handed_back_not_failed(array $mode): void
    {
        $app = $this->app(retries: 0);
        $this->send($app, 'async', new Job('slow', 'long'));
        $consumer = new CliProcess(['consume', __DIR__ . '/app.php', 'async', '--sleep=0.05', '--stop-timeout=0.3', ...$mode], ['FORKLIFT_RUN_DIR' => $this->dir]);
        $this->waitForLine('long', 'slow');
        $consumer->kill(SIGTERM);
        $this->assertSame(0, $consumer->wait(15), $consumer->log);
        $this->assertStringContainsString('handed back to async', $consumer->log);
        $this->assertSame([], $this->drain($app->receivers['failed']), 'not a failure');
        $back = $this->drain($app->receivers['async']);
        $this->assertSame(['long'], array_map(static fn ($e) => $e->getMessage()->tag, $back), 'back in its transport');
        $this->assertNull($back[0]->last(\Symfony\Component\Messenger\Stamp\RedeliveryStamp::class), 'no retry used up');
    }

    public function test_a_transport_that_goes_down_is_retried_with_backoff_and_limits_still_stop_it(): void
    {
        $app = $this->app();
        $down = new class () implements \Symfony\Component\Messenger\Transport\Receiver\ReceiverInterface {
            public int $calls = 0;

            public function get(): iterable
            {
                if (++$this->calls > 1) {
                    throw new \Symfony\Component\Messenger\Exception\TransportException('connection refused (test)');
                }

                return [];
            }

            public function ack(\Symfony\Component\Messenger\Envelope $envelope): void
            {
            }

            public function reject(\Symfony\Component\Messenger\Envelope $envelope): void
            {
            }
        };
        $app->events->addSubscriber(new \Symfony\Component\Messenger\EventListener\StopWorkerOnTimeLimitListener(2));
        $t = microtime(true);
        (new Worker(['down' => $down], $app->bus, $app->events, $this->logger))->run(['sleep' => 10_000]);
        $took = microtime(true) - $t;

        $this->assertLessThan(6.0, $took, 'the time limit stopped it while the transport was down');
        $failures = array_filter($this->logger->lines, static fn ($l) => str_contains($l, 'Receiving failed (connection refused (test))'));
        // At a 10 ms tick, without backoff ~200 receives would fail in 2 s; with it: 0.5, 1, 2 s apart.
        $this->assertGreaterThanOrEqual(2, \count($failures));
        $this->assertLessThanOrEqual(4, \count($failures), $this->logger->text());
        $this->assertLessThanOrEqual(5, $down->calls);
    }

    public function test_a_message_failed_before_its_child_still_counts_for_the_limit(): void
    {
        $app = $this->app(retries: 0);
        $this->send($app, 'async', new Job('ok', 'refused'));
        $app->events->addListener(\Symfony\Component\Messenger\Event\WorkerMessageReceivedEvent::class, static function (): void {
            throw new \DomainException('refused by a listener');
        });
        $t = microtime(true);
        $this->consume($app, ['async'], 1);
        $this->assertLessThan(5.0, microtime(true) - $t, 'the limit of 1 stopped it');
        $this->assertCount(1, $this->drain($app->receivers['failed']));
    }

    public function test_a_result_that_would_run_code_when_revived_stays_in_the_child(): void
    {
        $app = $this->app();
        $this->send($app, 'async', new Job('serializable', 's'));
        $this->consume($app, ['async'], 1);
        $this->assertSame(['s'], array_column($this->handled(), 'tag'));
        $this->assertSame([], glob("$this->log.revived.*"), 'Sneaky::unserialize never ran (in the consumer or anywhere)');
        $this->assertSame([], $this->drain($app->receivers['failed']), 'handled, acked');
    }

    public function test_a_crash_cause_survives_serialization(): void
    {
        $e = unserialize(serialize(new \Forklift\Messenger\HandlerCrashedException('died: SIGSEGV')));
        $this->assertSame('died: SIGSEGV', $e->getMessage());
        $this->assertSame('not started', $e->getOutcome());
        $this->assertNull($e->getResult());
    }

    public function test_bad_input_is_refused_with_what_to_fix(): void
    {
        $app = $this->app();
        $bus = new MessageBus();
        $r = $app->receivers['async'];
        $cases = [
            [fn () => new Worker([], $bus), 'give at least one receiver'],
            [fn () => new Worker([$r], $bus), 'keyed by their transport\'s name'],
            [fn () => new Worker(['a' => new \stdClass()], $bus), 'must implement'],
            [fn () => new Worker(['a' => $r], $bus, workers: 0), '$workers must be 1 to 1024, 0 given'],
            [fn () => new Worker(['a' => $r], $bus, name: 'a/b'), '$name names the pid file'],
            [fn () => new Worker(['a' => $r], $bus, closeBeforeFork: [new \PDO('sqlite::memory:')]), 'is a PDO'],
            [fn () => new Worker(['a' => $r], $bus, closeBeforeFork: [new \stdClass()]), 'do not know how to close a stdClass'],
            [fn () => (new Worker(['a' => $r], $bus))->run(['sleep' => 0]), 'sleep must be more than 0'],
            [fn () => new Worker(['a' => $r], $bus, maxMessagesPerWorker: 5), 'give prefork: true too'],
        ];
        foreach ($cases as [$fn, $message]) {
            try {
                $fn();
                $this->fail("no exception; expected: $message");
            } catch (InvalidArgumentException $e) {
                $this->assertStringContainsString($message, $e->getMessage());
            }
        }
        foreach ([
            ['--workers=0', 'Option "workers" must be a positive integer'],
            ['--timeout=-1', 'Option "timeout" must be a number of seconds'],
            ['--memory-limit=lots', 'Option "memory-limit" must be a number of bytes'],
            ['--limit=x', 'Option "limit" must be a positive integer'],
            ['--worker-memory-limit=big', 'Option "worker-memory-limit" must be a number of bytes'],
            ['--sleep=0.0005', 'Option "sleep" must be at least 0.001 seconds'],
            ['--grace=3', 'Option "grace" needs --timeout'],
            ['nosuch', 'The receiver "nosuch" does not exist. Valid receivers are: async, failed.'],
        ] as [$arg, $message]) {
            $out = \Forklift\Tests\Support\forklift_cli(['consume', __DIR__ . '/app.php', ...(str_starts_with($arg, '-') ? ['async', $arg] : [$arg])]);
            $this->assertNotSame(0, $out['status'], $arg);
            $this->assertStringContainsString($message, preg_replace('/\s+/', ' ', $out['out'] . $out['err']), $arg);
        }
        $out = \Forklift\Tests\Support\forklift_cli(['consume', "$this->dir/nope.php"]);
        $this->assertSame(2, $out['status']);
        $this->assertStringContainsString('is not a readable file', $out['err']);
    }

    public function test_a_broken_transport_fails_the_start_with_its_error(): void
    {
        putenv('FORKLIFT_TEST_TRANSPORTS=' . json_encode(['async' => 'redis://127.0.0.1:1/x?lazy=1']));
        $app = require __DIR__ . '/app.php';
        $this->expectException(\Symfony\Component\Messenger\Exception\TransportException::class);
        (new Worker(['async' => $app->receivers['async']], $app->bus, $app->events, $this->logger))->run(['sleep' => 20_000]);
    }

    /** Waits (bounded) until `$done(handled lines)` says so. */
    private function waitFor(callable $done): void
    {
        $deadline = microtime(true) + 15;
        while (microtime(true) < $deadline) {
            if ($done($this->handled())) {
                return;
            }
            usleep(5000);
        }
        $this->fail("the handler's log never got there: " . file_get_contents($this->log));
    }

    /** Waits (bounded) for the handler's line of `$tag` doing `$action`. */
    private function waitForLine(string $tag, string $action): array
    {
        $deadline = microtime(true) + 15;
        while (microtime(true) < $deadline) {
            foreach ($this->handled() as $h) {
                if ($h['tag'] === $tag && $h['action'] === $action) {
                    return $h;
                }
            }
            usleep(5000);
        }
        $this->fail("no line \"$tag $action\" in the handler's log");
    }
}
