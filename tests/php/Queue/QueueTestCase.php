<?php

declare(strict_types=1);

namespace Forklift\Tests\Queue;

use Forklift\Daemon;
use Forklift\Tests\Support\DaemonKit;
use Forklift\Tests\Support\MemoryLogger;
use Forklift\Tests\Support\Procfs;
use PHPUnit\Framework\TestCase;

require_once __DIR__ . '/RecordingHandler.php';

/** What the broker tests share: a temp dir, the handler's log, a daemon run in this process until a condition holds, consumer subprocesses. */
abstract class QueueTestCase extends TestCase
{
    protected string $dir;
    protected string $handlerLog;
    protected MemoryLogger $logger;
    /** @var array<string, mixed> the daemon's status when runUntil() stopped it */
    protected array $status = [];
    /** @var list<resource> */
    private array $subprocesses = [];

    protected function setUp(): void
    {
        $this->dir = DaemonKit::tempDir();
        $this->handlerLog = "$this->dir/handler.log";
        touch($this->handlerLog);
        $this->logger = new MemoryLogger();
    }

    protected function tearDown(): void
    {
        foreach ($this->subprocesses as $p) {
            $pid = proc_get_status($p)['pid'];
            posix_kill($pid, \SIGKILL);
            proc_close($p);
        }
        DaemonKit::removeDir($this->dir);
    }

    protected function daemon(): Daemon
    {
        return new Daemon('queue-test', pidFile: "$this->dir/d-" . bin2hex(random_bytes(3)) . '.pid', stopTimeout: 10.0, logger: $this->logger);
    }

    protected function handler(): RecordingHandler
    {
        return new RecordingHandler($this->handlerLog);
    }

    /**
     * Runs `$d` until `$done()` is true (checked every 10 ms, in the dispatcher), then stops it.
     * Fails the test when `$limit` seconds pass first.
     */
    protected function runUntil(Daemon $d, callable $done, float $limit = 30.0): void
    {
        $deadline = microtime(true) + $limit;
        $timedOut = false;
        $d->every(0.01, function () use ($d, $done, $deadline, &$timedOut) {
            $finished = $done();
            if ($finished || microtime(true) > $deadline) {
                $timedOut = !$finished;
                $this->status = $d->status();
                $d->stop();
            }
        }, name: 'test-watch');
        $this->assertSame(0, $d->run());
        $this->assertFalse($timedOut, "the condition did not hold within $limit s; handler log:\n" . file_get_contents($this->handlerLog) . "\ndaemon log:\n" . $this->logger->text());
    }

    /** The consumer's counter `queue_messages{queue, outcome}` in the status runUntil() kept. */
    protected function counted(string $queue, string $outcome): int
    {
        foreach ($this->status['counters'] ?? [] as $c) {
            if ($c['name'] === 'queue_messages' && \in_array(['outcome', $outcome], $c['labels'], true) && \in_array(['queue', $queue], $c['labels'], true)) {
                return $c['count'];
            }
        }

        return 0;
    }

    /** @return list<array{event: string, pid: int, body: string, attempt: int, at: float}> */
    protected function lines(string $event, string $body): array
    {
        return RecordingHandler::of($this->handlerLog, $event, $body);
    }

    /** Waits (bounded) until `$done()` is true; the handler's log is the event source. */
    protected function waitFor(callable $done, float $limit, string $what): void
    {
        $deadline = microtime(true) + $limit;
        while (!$done()) {
            if (microtime(true) > $deadline) {
                $this->fail("$what did not happen within $limit s; handler log:\n" . file_get_contents($this->handlerLog));
            }
            usleep(5000);
        }
    }

    /** Starts tests/php/Queue/consumer.php with `$args` (after the broker kind); returns its pid. */
    protected function spawnConsumer(array $args): int
    {
        $p = proc_open(
            [\PHP_BINARY, '-d', 'extension=' . Procfs::loadedExtension(), __DIR__ . '/consumer.php', ...$args],
            [0 => ['file', '/dev/null', 'r'], 1 => ['file', "$this->dir/consumer.out", 'a'], 2 => ['file', "$this->dir/consumer.out", 'a']],
            $pipes
        );
        $this->subprocesses[] = $p;

        return proc_get_status($p)['pid'];
    }

    /** Kills a spawned consumer with SIGKILL and reaps it. */
    protected function killConsumer(int $pid): void
    {
        foreach ($this->subprocesses as $i => $p) {
            if (proc_get_status($p)['pid'] === $pid) {
                posix_kill($pid, \SIGKILL);
                proc_close($p);
                unset($this->subprocesses[$i]);
            }
        }
    }
}
