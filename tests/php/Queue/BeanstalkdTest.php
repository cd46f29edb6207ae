<?php

declare(strict_types=1);

namespace Forklift\Tests\Queue;

use Forklift\Queue\Beanstalkd;
use Forklift\Queue\Consumer;
use Forklift\Tests\Support\Beanstalkd as Server;
use Forklift\Tests\Support\DaemonKit;
use Pheanstalk\Exception\ServerException;
use Pheanstalk\JobId;
use Pheanstalk\Pheanstalk;

require_once __DIR__ . '/QueueTestCase.php';

/** Forklift\Queue\Consumer on a real beanstalkd through Pheanstalk 4: each message in a child, settled by how it ended. */
final class BeanstalkdTest extends QueueTestCase
{
    private static ?Server $server = null;
    private string $tube;
    private Pheanstalk $client;

    public static function setUpBeforeClass(): void
    {
        self::$server = new Server();
    }

    public static function tearDownAfterClass(): void
    {
        self::$server?->stop();
        self::$server = null;
    }

    protected function setUp(): void
    {
        parent::setUp();
        $this->tube = 't' . bin2hex(random_bytes(4));
        $this->client = self::$server->client();
        $this->client->useTube($this->tube);
    }

    private function broker(): Beanstalkd
    {
        return new Beanstalkd('127.0.0.1', self::$server->port, tube: $this->tube);
    }

    private function state(string $id): string
    {
        try {
            return (string) $this->client->statsJob(new JobId((int) $id))['state'];
        } catch (ServerException $e) {
            // stats-job answers NOT_FOUND for a deleted job (Pheanstalk's YAML parser throws it as a ServerException).
            if (str_contains($e->getMessage(), 'NOT_FOUND')) {
                return 'deleted';
            }
            throw $e;
        }
    }

    public function test_a_message_whose_handler_returns_is_deleted_and_counted_as_acked(): void
    {
        $id = (string) $this->client->put('ok:a')->getId();
        $d = $this->daemon();
        (new Consumer($this->broker(), $this->handler(), name: 'mail', logger: $this->logger))->attach($d);
        $this->runUntil($d, fn () => ($this->status = $d->status()) && $this->counted('mail', 'acked') === 1);
        $this->assertSame('deleted', $this->state($id));
        $this->assertCount(1, $this->lines('end', 'ok:a'));
        $this->assertNotSame(getmypid(), $this->lines('end', 'ok:a')[0]['pid'], 'the handler ran in a child');
    }

    public function test_a_throwing_handler_is_released_with_the_delay_then_buried_with_its_cause_after_max_attempts(): void
    {
        $id = (string) $this->client->put('throw:b')->getId();
        $d = $this->daemon();
        (new Consumer($this->broker(), $this->handler(), name: 'mail', maxAttempts: 3, retryDelay: 1.0, poll: 0.05, logger: $this->logger))->attach($d);
        $this->runUntil($d, fn () => ($this->status = $d->status()) && $this->counted('mail', 'buried') === 1);

        $starts = $this->lines('start', 'throw:b');
        $this->assertSame([1, 2, 3], array_column($starts, 'attempt'));
        $this->assertGreaterThanOrEqual(0.95, $starts[1]['at'] - $starts[0]['at'], 'released with a delay of 1 s');
        $this->assertGreaterThanOrEqual(0.95, $starts[2]['at'] - $starts[1]['at'], 'released with a delay of 1 s');
        $this->assertSame('buried', $this->state($id));
        $this->assertSame(2, $this->counted('mail', 'retried'));
        $this->assertStringContainsString("mail: message $id (attempt 3 of 3) buried in beanstalkd 127.0.0.1:" . self::$server->port . " tube $this->tube: exception: uncaught RuntimeException: handler failed on throw:b", $this->logger->text());
        $this->assertStringContainsString('error: mail: message', $this->logger->text());
    }

    /** @return array<string, array{string, string}> */
    public static function crashes(): array
    {
        return [
            'segfault' => ['segv:c', 'signal: killed by signal 11 (SIGSEGV)'],
            'memory exhausted' => ['oom:c', 'oom: out of memory: exceeded the memory limit of 32 MB'],
            'exit()' => ['exit:c', 'exit: '],
            'past the timeout' => ['hang:c', 'timeout: timed out after 1 s'],
        ];
    }

    /** @dataProvider crashes */
    public function test_a_child_that_dies_is_retried_then_buried_with_the_cause(string $body, string $cause): void
    {
        $id = (string) $this->client->put($body)->getId();
        $d = $this->daemon();
        (new Consumer($this->broker(), $this->handler(), name: 'mail', timeout: 1.0, grace: 0.2, maxAttempts: 2, retryDelay: 0.0, poll: 0.05, logger: $this->logger))->attach($d);
        $this->runUntil($d, fn () => ($this->status = $d->status()) && $this->counted('mail', 'buried') === 1);

        $this->assertSame([1, 2], array_column($this->lines('start', $body), 'attempt'));
        $this->assertSame([], $this->lines('end', $body));
        $this->assertSame('buried', $this->state($id));
        $this->assertSame(1, $this->counted('mail', 'retried'));
        $this->assertStringContainsString("(attempt 1 of 2) failed, retried in 0 s: $cause", $this->logger->text());
        $this->assertStringContainsString("(attempt 2 of 2) buried in beanstalkd 127.0.0.1:" . self::$server->port . " tube $this->tube: $cause", $this->logger->text());
    }

    public function test_a_rejected_message_is_buried_at_the_first_attempt(): void
    {
        $id = (string) $this->client->put('reject:d')->getId();
        $d = $this->daemon();
        (new Consumer($this->broker(), $this->handler(), name: 'mail', maxAttempts: 5, poll: 0.05, logger: $this->logger))->attach($d);
        $this->runUntil($d, fn () => ($this->status = $d->status()) && $this->counted('mail', 'buried') === 1);
        $this->assertCount(1, $this->lines('start', 'reject:d'));
        $this->assertSame('buried', $this->state($id));
        $this->assertStringContainsString('Forklift\\Queue\\MessageRejectedException: cannot ever handle reject:d', $this->logger->text());
    }

    public function test_a_message_handled_longer_than_its_ttr_is_touched_and_delivered_once(): void
    {
        // TTR 2 s, handled for 5 s by a consumer with a second, free slot that polls every 50 ms:
        // without touches beanstalkd releases it after 2 s and that slot reserves it again.
        // (beanstalkd 1.12 lets a TTR run out only on a connection that is in use, as this one
        // is by its polls: docs/queues.md.)
        $id = (string) $this->client->put('sleep:5:e', 1024, 0, 2)->getId();
        $d = $this->daemon();
        (new Consumer($this->broker(), $this->handler(), name: 'mail', workers: 2, poll: 0.05, logger: $this->logger))->attach($d);
        $this->runUntil($d, fn () => ($this->status = $d->status()) && $this->counted('mail', 'acked') === 1);

        $this->assertCount(1, $this->lines('start', 'sleep:5:e'), 'delivered once');
        $this->assertSame(1, $this->lines('start', 'sleep:5:e')[0]['attempt']);
        $this->assertGreaterThan(4.0, $this->lines('end', 'sleep:5:e')[0]['at'] - $this->lines('start', 'sleep:5:e')[0]['at']);
        $this->assertSame('deleted', $this->state($id));
        $this->assertStringNotContainsString('no longer held', $this->logger->text());
    }

    public function test_the_message_of_a_consumer_killed_with_sigkill_goes_to_another_consumer_at_once(): void
    {
        $id = (string) $this->client->put('block:f')->getId();
        $pid = $this->spawnConsumer(['beanstalkd', (string) self::$server->port, $this->tube, $this->handlerLog, "$this->dir/sub.pid"]);
        $this->waitFor(fn () => \count($this->lines('start', 'block:f')) === 1, 15, 'the subprocess consumer starting the message');
        $child = $this->lines('start', 'block:f')[0]['pid'];

        $this->killConsumer($pid);
        $killedAt = microtime(true);
        $this->assertTrue(DaemonKit::waitGone([$child], 10), "the killed consumer's child (pid $child) dies with it");

        touch("$this->handlerLog.f.go");
        $d = $this->daemon();
        (new Consumer($this->broker(), $this->handler(), name: 'mail', poll: 0.05, logger: $this->logger))->attach($d);
        $this->runUntil($d, fn () => ($this->status = $d->status()) && $this->counted('mail', 'acked') === 1);

        $starts = $this->lines('start', 'block:f');
        $this->assertCount(2, $starts);
        $this->assertSame(2, $starts[1]['attempt'], 'the killed delivery counts as an attempt');
        $this->assertNotSame($child, $starts[1]['pid']);
        $this->assertLessThan(3.0, $starts[1]['at'] - $killedAt, 'released when the killed consumer\'s connection closed');
        $this->assertCount(1, $this->lines('end', 'block:f'), 'handled to the end once');
        $this->assertSame('deleted', $this->state($id));
    }

    public function test_the_consumer_keeps_its_one_connection_while_children_crash_and_never_lends_it_to_them(): void
    {
        foreach (['segv:g', 'ok:g1', 'oom:g', 'ok:g2', 'exit:g', 'ok:g3'] as $body) {
            $this->client->put($body);
        }
        $before = (int) $this->client->stats()['total-connections'];
        $d = $this->daemon();
        (new Consumer($this->broker(), $this->handler(), name: 'mail', workers: 2, maxAttempts: 1, poll: 0.05, logger: $this->logger))->attach($d);
        $this->runUntil($d, fn () => ($this->status = $d->status()) && $this->counted('mail', 'acked') + $this->counted('mail', 'buried') === 6);

        $this->assertSame(3, $this->counted('mail', 'acked'));
        $this->assertSame(3, $this->counted('mail', 'buried'));
        $this->assertSame(0, $this->counted('mail', 'unsettled'));
        $this->assertSame(1, (int) $this->client->stats()['total-connections'] - $before, 'one connection, the consumer\'s, opened once');
    }
}
