<?php

declare(strict_types=1);

namespace Forklift\Tests\Messenger;

use Forklift\Messenger\App;
use Forklift\Messenger\HandlerCrashedException;
use Forklift\Messenger\Worker;
use Forklift\Tests\Support\DaemonKit;
use PHPUnit\Framework\TestCase;
use Symfony\Component\Messenger\Envelope;
use Symfony\Component\Messenger\Event\WorkerMessageHandledEvent;
use Symfony\Component\Messenger\Event\WorkerStoppedEvent;
use Symfony\Component\Messenger\EventListener\StopWorkerOnMessageLimitListener;
use Symfony\Component\Messenger\Stamp\ErrorDetailsStamp;
use Symfony\Component\Messenger\Stamp\HandledStamp;
use Symfony\Component\Messenger\Transport\Receiver\ReceiverInterface;

require_once __DIR__ . '/autoload.php';

/**
 * What every transport must show under forklift:consume: handlers that crash in each way are
 * retried per the retry strategy, then land in the failure transport with the cause in their
 * ErrorDetailsStamp; handled messages are acked with their handled stamps; the consumer goes on.
 * Each subclass starts its real server on loopback and names its transports' DSNs.
 */
abstract class ConsumerTestCase extends TestCase
{
    protected string $dir;
    protected string $log;
    protected TestLogger $logger;

    /** DSN of the transport named `$name` (a fresh queue per test). */
    abstract protected function dsn(string $name): string;

    protected function setUp(): void
    {
        $this->dir = DaemonKit::tempDir();
        $this->log = "$this->dir/handled.log";
        $this->logger = new TestLogger();
        touch($this->log);
        putenv("FORKLIFT_RUN_DIR=$this->dir");
        putenv("FORKLIFT_TEST_LOG=$this->log");
        putenv('FORKLIFT_TEST_CACHE_DIR');
    }

    protected function tearDown(): void
    {
        putenv('FORKLIFT_RUN_DIR');
        DaemonKit::removeDir($this->dir);
    }

    /** The tests' application on transports `$names` ("failed" is the failure transport). */
    protected function app(array $names = ['async', 'failed'], int $retries = 1): App
    {
        $transports = [];
        foreach ($names as $n) {
            $transports[$n] = $this->dsn($n);
        }
        putenv('FORKLIFT_TEST_TRANSPORTS=' . json_encode($transports));
        putenv("FORKLIFT_TEST_RETRIES=$retries");

        return require __DIR__ . '/app.php';
    }

    protected function send(App $app, string $transport, object ...$messages): void
    {
        foreach ($messages as $m) {
            $app->receivers[$transport]->send(new Envelope($m));
        }
    }

    /** Consumes `$receivers` of `$app` until `$messages` messages were received (Messenger's limit). */
    protected function consume(App $app, array $receivers, int $messages, array $worker = []): Worker
    {
        // In the order given, not the app's.
        $ordered = [];
        foreach ($receivers as $r) {
            $ordered[$r] = $app->receivers[$r];
        }
        $w = new Worker($ordered, $app->bus, $app->events, $this->logger, ...($worker + ['closeBeforeFork' => $app->closeBeforeFork]));
        $limit = new StopWorkerOnMessageLimitListener($messages);
        $app->events->addSubscriber($limit);
        try {
            $w->run(['sleep' => 20_000, 'limit' => $messages]);
        } finally {
            $app->events->removeSubscriber($limit);
        }

        return $w;
    }

    /** @return list<array{tag: string, pid: int, action: string}> the handler's lines, in order */
    protected function handled(): array
    {
        $out = [];
        foreach (file($this->log, FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES) as $line) {
            [$tag, $pid, $action] = explode(' ', $line);
            $out[] = ['tag' => $tag, 'pid' => (int) $pid, 'action' => $action];
        }

        return $out;
    }

    /** @return array<string, int> how many times each tag was handled */
    protected function times(): array
    {
        return array_count_values(array_column($this->handled(), 'tag'));
    }

    /** @return list<Envelope> every message left in `$receiver`, acked on the way */
    protected function drain(ReceiverInterface $receiver): array
    {
        $out = [];
        for ($empty = 0; $empty < 3;) {
            $got = false;
            foreach ($receiver->get() as $e) {
                $got = true;
                $out[] = $e;
                $receiver->ack($e);
            }
            $empty = $got ? 0 : $empty + 1;
        }

        return $out;
    }

    public function test_handlers_that_die_are_retried_then_failed_with_the_cause(): void
    {
        $app = $this->app(retries: 1);
        $this->send($app, 'async', new Job('segfault', 'seg'), new Job('oom', 'oom'), new Job('hang', 'hang'), new Job('exit', 'exit'), new Job('ok', 'after'));
        // 4 crashing × 2 deliveries + 1.
        $this->consume($app, ['async'], 9, ['workers' => 2, 'timeout' => 1.0, 'grace' => 0.2]);

        $this->assertEquals(['seg' => 2, 'oom' => 2, 'hang' => 2, 'exit' => 2, 'after' => 1], $this->times(), 'each crashing message twice (1 retry), the last one once');
        $consumer = getmypid();
        foreach ($this->handled() as $h) {
            $this->assertNotSame($consumer, $h['pid'], 'handled in a child');
        }
        $this->assertCount(9, array_unique(array_column($this->handled(), 'pid')), 'a fresh child per message');

        $failed = [];
        foreach ($this->drain($app->receivers['failed']) as $e) {
            $d = $e->last(ErrorDetailsStamp::class);
            $this->assertNotNull($d, 'the failure transport gets the error details');
            $failed[$e->getMessage()->tag] = [$d->getExceptionClass(), $d->getExceptionMessage()];
        }
        ksort($failed);
        $this->assertSame(['exit', 'hang', 'oom', 'seg'], array_keys($failed), $this->logger->text());
        foreach ($failed as [$class]) {
            $this->assertSame(HandlerCrashedException::class, $class);
        }
        $this->assertStringContainsString('SIGSEGV', $failed['seg'][1]);
        $this->assertStringContainsString('out of memory', $failed['oom'][1]);
        $this->assertStringContainsString('timed out', $failed['hang'][1]);
        $this->assertStringContainsString('exited with code 3', $failed['exit'][1]);
        $this->assertSame([], $this->drain($app->receivers['async']), 'nothing left behind');
    }

    public function test_exceptions_keep_their_class_and_whether_they_are_recoverable(): void
    {
        $app = $this->app(retries: 2);
        $this->send($app, 'async', new Job('throw', 'runtime'), new Job('unrecoverable', 'never'), new Job('fatal', 'undefined'));
        // runtime and undefined: 3 deliveries each; never: 1.
        $this->consume($app, ['async'], 7);

        $this->assertEquals(['runtime' => 3, 'never' => 1, 'undefined' => 3], $this->times());
        $failed = [];
        foreach ($this->drain($app->receivers['failed']) as $e) {
            $d = $e->last(ErrorDetailsStamp::class);
            $failed[$e->getMessage()->tag] = [$d->getExceptionClass(), $d->getExceptionCode(), $d->getExceptionMessage()];
        }
        ksort($failed);
        $this->assertSame([
            'never' => ['Symfony\Component\Messenger\Exception\UnrecoverableMessageHandlingException', 0, 'do not retry never'],
            'runtime' => ['RuntimeException', 42, 'handler threw for runtime'],
            'undefined' => ['Error', 0, 'Call to undefined function forklift_test_no_such_function()'],
        ], $failed);
    }

    public function test_a_handled_message_is_acked_with_its_handled_stamps(): void
    {
        $app = $this->app();
        $stamps = [];
        $app->events->addListener(WorkerMessageHandledEvent::class, static function (WorkerMessageHandledEvent $e) use (&$stamps): void {
            $stamps[$e->getEnvelope()->getMessage()->tag] = $e->getEnvelope()->last(HandledStamp::class);
        });
        $this->send($app, 'async', new Job('ok', 'a'), new Job('closure', 'c'), new Other('o'), new Job('huge', 'h'));
        $this->consume($app, ['async'], 4);

        $this->assertSame('done a', $stamps['a']->getResult());
        $this->assertSame('x1', $stamps['c']->getResult());
        $this->assertNull($stamps['o']->getResult(), 'a closure result does not cross back; the stamp does');
        $this->assertStringContainsString('OtherHandler', $stamps['o']->getHandlerName());
        $this->assertNull($stamps['h']->getResult(), 'a 12 MB result stays in the child; the message is handled');
        $this->assertSame([], $this->drain($app->receivers['async']));
        $this->assertSame([], $this->drain($app->receivers['failed']));
    }
}
