<?php

declare(strict_types=1);

namespace Forklift\Tests\Queue;

use Forklift\InvalidArgumentException;
use Forklift\Queue\Consumer;
use Forklift\Queue\RedisStream;
use Forklift\Tests\Support\DaemonKit;
use Forklift\Tests\Support\Redis as Server;

require_once __DIR__ . '/QueueTestCase.php';

/** Forklift\Queue\Consumer on a real Redis stream with a consumer group (phpredis 5.3.7): each message in a child, settled by how it ended. */
final class RedisStreamTest extends QueueTestCase
{
    private static ?Server $server = null;
    private string $stream;
    private \Redis $client;

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
        $this->stream = 's' . bin2hex(random_bytes(4));
        $this->client = self::$server->client();
    }

    private function broker(float $claimIdle = 60.0): RedisStream
    {
        return new RedisStream(self::$server->client(), $this->stream, claimIdle: $claimIdle);
    }

    private function put(string $body): string
    {
        return (string) $this->client->xAdd($this->stream, '*', ['body' => $body]);
    }

    /** @return list<array<string, mixed>> the dead letters, decoded */
    private function dead(): array
    {
        return array_map(fn ($j) => json_decode($j, true, flags: \JSON_THROW_ON_ERROR), $this->client->lRange("$this->stream:dead", 0, -1));
    }

    private function pending(): int
    {
        return (int) ($this->client->rawCommand('XPENDING', $this->stream, 'forklift')[0] ?? 0);
    }

    public function test_a_message_whose_handler_returns_is_acked_and_deleted(): void
    {
        $this->put('ok:a');
        $d = $this->daemon();
        (new Consumer($this->broker(), $this->handler(), name: 'mail', poll: 0.05, logger: $this->logger))->attach($d);
        $this->runUntil($d, fn () => ($this->status = $d->status()) && $this->counted('mail', 'acked') === 1);
        $this->assertCount(1, $this->lines('end', 'ok:a'));
        $this->assertSame(0, $this->client->xLen($this->stream), 'deleted from the stream');
        $this->assertSame(0, $this->pending(), 'acked in the group');
    }

    public function test_a_throwing_handler_is_retried_after_the_delay_then_dead_lettered_with_its_cause(): void
    {
        $id = $this->put('throw:b');
        $d = $this->daemon();
        $broker = $this->broker();
        (new Consumer($broker, $this->handler(), name: 'mail', maxAttempts: 3, retryDelay: 0.5, poll: 0.05, logger: $this->logger))->attach($d);
        $this->runUntil($d, fn () => ($this->status = $d->status()) && $this->counted('mail', 'buried') === 1);

        $starts = $this->lines('start', 'throw:b');
        $this->assertSame([1, 2, 3], array_column($starts, 'attempt'));
        $this->assertGreaterThanOrEqual(0.5, $starts[1]['at'] - $starts[0]['at'], 'retried after 0.5 s');
        $this->assertGreaterThanOrEqual(0.5, $starts[2]['at'] - $starts[1]['at'], 'retried after 0.5 s');
        $dead = $this->dead();
        $this->assertCount(1, $dead);
        $this->assertSame('throw:b', $dead[0]['body']);
        $this->assertSame(3, $dead[0]['attempts']);
        $this->assertStringStartsWith('exception: uncaught RuntimeException: handler failed on throw:b', $dead[0]['cause']);
        $this->assertNotSame($id, $dead[0]['id'], 'a retry is a new entry');
        $this->assertSame(0, $this->client->xLen($this->stream));
        $this->assertSame(0, $this->client->zCard("$this->stream:delayed"));
        $this->assertSame(0, $this->pending());
        $this->assertSame(2, $this->counted('mail', 'retried'));
        $this->assertStringContainsString("buried in redis stream $this->stream (group forklift, consumer " . gethostname() . ':' . getmypid(), $this->logger->text());
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
    public function test_a_child_that_dies_is_retried_then_dead_lettered_with_the_cause(string $body, string $cause): void
    {
        $this->put($body);
        $d = $this->daemon();
        (new Consumer($this->broker(), $this->handler(), name: 'mail', timeout: 1.0, grace: 0.2, maxAttempts: 2, retryDelay: 0.0, poll: 0.05, logger: $this->logger))->attach($d);
        $this->runUntil($d, fn () => ($this->status = $d->status()) && $this->counted('mail', 'buried') === 1);

        $this->assertSame([1, 2], array_column($this->lines('start', $body), 'attempt'));
        $this->assertSame([], $this->lines('end', $body));
        $this->assertSame([$body], array_column($this->dead(), 'body'));
        $this->assertStringStartsWith($cause, $this->dead()[0]['cause']);
        $this->assertSame(1, $this->counted('mail', 'retried'));
    }

    public function test_a_rejected_message_is_dead_lettered_at_the_first_attempt(): void
    {
        $this->put('reject:d');
        $d = $this->daemon();
        (new Consumer($this->broker(), $this->handler(), name: 'mail', maxAttempts: 5, poll: 0.05, logger: $this->logger))->attach($d);
        $this->runUntil($d, fn () => ($this->status = $d->status()) && $this->counted('mail', 'buried') === 1);
        $this->assertCount(1, $this->lines('start', 'reject:d'));
        $this->assertSame(1, $this->dead()[0]['attempts']);
        $this->assertStringContainsString('Forklift\\Queue\\MessageRejectedException: cannot ever handle reject:d', $this->dead()[0]['cause']);
    }

    public function test_a_message_handled_longer_than_claim_idle_is_kept_and_delivered_once(): void
    {
        // claimIdle 1 s, handled for 3.5 s, two consumers of one worker each: the holder does not
        // read (its slot is taken), only its keep-alive renews the hold; without it the other
        // consumer would take the entry over after 1 s and run it a second time.
        $this->put('sleep:3.5:e');
        $d = $this->daemon();
        (new Consumer($this->broker(1.0), $this->handler(), name: 'a', poll: 0.05, logger: $this->logger))->attach($d);
        (new Consumer($this->broker(1.0), $this->handler(), name: 'b', poll: 0.05, logger: $this->logger))->attach($d);
        $this->runUntil($d, fn () => ($this->status = $d->status()) && $this->counted('a', 'acked') + $this->counted('b', 'acked') === 1);

        $this->assertCount(1, $this->lines('start', 'sleep:3.5:e'), 'delivered once');
        $this->assertGreaterThan(3.0, $this->lines('end', 'sleep:3.5:e')[0]['at'] - $this->lines('start', 'sleep:3.5:e')[0]['at']);
        $this->assertSame(0, $this->pending());
        $this->assertStringNotContainsString('no longer held', $this->logger->text());
    }

    public function test_the_message_of_a_consumer_killed_with_sigkill_is_taken_over_by_another_within_claim_idle(): void
    {
        $this->put('block:f');
        $pid = $this->spawnConsumer(['redis', (string) self::$server->port, $this->stream, $this->handlerLog, "$this->dir/sub.pid", '1.0']);
        $this->waitFor(fn () => \count($this->lines('start', 'block:f')) === 1, 15, 'the subprocess consumer starting the message');
        $child = $this->lines('start', 'block:f')[0]['pid'];

        $this->killConsumer($pid);
        $killedAt = microtime(true);
        $this->assertTrue(DaemonKit::waitGone([$child], 10), "the killed consumer's child (pid $child) dies with it");

        touch("$this->handlerLog.f.go");
        $d = $this->daemon();
        (new Consumer($this->broker(1.0), $this->handler(), name: 'mail', poll: 0.05, logger: $this->logger))->attach($d);
        $this->runUntil($d, fn () => ($this->status = $d->status()) && $this->counted('mail', 'acked') === 1);

        $starts = $this->lines('start', 'block:f');
        $this->assertCount(2, $starts);
        $this->assertSame(2, $starts[1]['attempt'], 'the killed delivery counts as an attempt');
        $this->assertNotSame($child, $starts[1]['pid']);
        // Bound: claimIdle (1 s) after the killed consumer's last renewal, plus a quarter of it between looks.
        $this->assertLessThan(2.5, $starts[1]['at'] - $killedAt);
        $this->assertCount(1, $this->lines('end', 'block:f'), 'handled to the end once');
        $this->assertSame(0, $this->client->xLen($this->stream));
        $this->assertSame(0, $this->pending());
    }

    public function test_the_consumer_keeps_its_one_connection_while_children_crash_and_never_lends_it_to_them(): void
    {
        foreach (['segv:g', 'ok:g1', 'oom:g', 'ok:g2', 'exit:g', 'ok:g3'] as $body) {
            $this->put($body);
        }
        // The consumer's connection, named so that it can be found in CLIENT LIST: if the consumer
        // lost it (a child wrote on it, or closed it for both) it would reconnect without the name.
        $redis = self::$server->client();
        $redis->client('setname', 'consumer-under-test');
        $id = $redis->rawCommand('CLIENT', 'ID');
        $d = $this->daemon();
        (new Consumer(new RedisStream($redis, $this->stream), $this->handler(), name: 'mail', workers: 2, maxAttempts: 1, poll: 0.05, logger: $this->logger))->attach($d);
        $this->runUntil($d, fn () => ($this->status = $d->status()) && $this->counted('mail', 'acked') + $this->counted('mail', 'buried') === 6);

        $this->assertSame(3, $this->counted('mail', 'acked'));
        $this->assertSame(3, $this->counted('mail', 'buried'));
        $this->assertSame(0, $this->counted('mail', 'unsettled'));
        $clients = (string) $this->client->rawCommand('CLIENT', 'LIST');
        $this->assertMatchesRegularExpression("/^id=$id .* name=consumer-under-test /m", $clients, "the consumer kept connection $id:\n$clients\n" . $this->logger->text());
        $this->assertSame(1, substr_count($clients, 'name=consumer-under-test '));
    }

    public function test_a_blocking_receive_returns_the_message_added_while_it_waits(): void
    {
        $broker = $this->broker();
        $this->assertNull($broker->receive(0.0), 'empty: the group is created, nothing received');
        $port = self::$server->port;
        $stream = $this->stream;
        // The producer adds once it sees the consumer blocked in XREADGROUP (CLIENT LIST is the event).
        $producer = \Forklift\fork(static function () use ($port, $stream): void {
            $r = new \Redis();
            $r->connect('127.0.0.1', $port, 5.0);
            $deadline = microtime(true) + 10;
            while (!str_contains((string) $r->rawCommand('CLIENT', 'LIST'), 'cmd=xreadgroup') && microtime(true) < $deadline) {
                usleep(2000);
            }
            $r->xAdd($stream, '*', ['body' => 'late']);
        });
        $started = microtime(true);
        $message = $broker->receive(8.0);
        $this->assertTrue($producer->wait()->ok());
        $this->assertNotNull($message);
        $this->assertSame('late', $message->body);
        $this->assertSame(1, $message->attempts);
        $this->assertLessThan(5.0, microtime(true) - $started, 'woken by the entry, not by the end of the wait');
        $broker->ack($message);
        $this->assertSame(0, $this->pending());
    }

    public function test_a_redis_that_is_not_connected_is_refused_with_what_to_pass(): void
    {
        // Not one closed with close(): phpredis 5.3.7 reconnects that one on its next command.
        $this->expectException(InvalidArgumentException::class);
        $this->expectExceptionMessage('Forklift\\Queue\\RedisStream: the \\Redis given is not connected: connect() it first, or pass a factory fn (): \\Redis');
        new RedisStream(new \Redis(), $this->stream);
    }
}
