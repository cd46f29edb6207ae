<?php

declare(strict_types=1);

namespace Forklift\Queue;

use Forklift\InvalidArgumentException;

/**
 * A Redis stream read by a consumer group through phpredis (Redis 6.2 or later): XREADGROUP to
 * receive, XACK + XDEL to ack, XAUTOCLAIM to take over entries a consumer has held silent for
 * `$claimIdle` seconds (it died: killed, or its host gone), XCLAIM by the holder to renew its
 * hold while a handler runs. Each consumer has its own name (host:pid:random) in the group.
 *
 * Producers add entries with a `body` field: `XADD mail * body '{"to":…}'` ({@see put()}).
 * Redis has no delayed delivery, so a retry with a delay waits in the sorted set `STREAM:delayed`
 * (score: when it is due) and is added to the stream again, with an `attempts` field, by the next
 * receive of any consumer once due (one Lua script: atomic). A buried entry goes to the list
 * `STREAM:dead` as JSON: id, body, attempts, cause, when.
 *
 * Holds are the group's, not the connection's, so the connection may close at any time; a forked
 * child {@see abandon()}s the one it inherits. Not for Redis Cluster (the three keys would need a
 * hash tag).
 */
final class RedisStream implements Broker
{
    /** Moves due retries from the sorted set back into the stream. KEYS: delayed, stream; ARGV: now (ms). */
    private const PROMOTE = <<<'LUA'
        local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
        for _, m in ipairs(due) do
            if redis.call('ZREM', KEYS[1], m) == 1 then
                local a = string.find(m, ':', 1, true)
                local b = string.find(m, ':', a + 1, true)
                redis.call('XADD', KEYS[2], '*', 'body', string.sub(m, b + 1), 'attempts', string.sub(m, 1, a - 1))
            end
        end
        return #due
        LUA;

    /** Renews the hold on an entry if this consumer still holds it. KEYS: stream; ARGV: group, consumer, id. */
    private const RENEW = <<<'LUA'
        local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
        if #p == 0 then return 0 end
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
        return 1
        LUA;

    private ?\Redis $redis;
    /** @var \Closure(): \Redis */
    private \Closure $connect;
    private ?string $consumer;
    /** Whether the group was created (or found) on this connection's server. */
    private bool $grouped = false;
    private string $claimCursor = '0-0';
    private float $nextClaim = 0.0;
    /** @var array<string, float> when each held entry was received or renewed, by id */
    private array $renewed = [];
    /** @var list<\Redis> connections inherited by a forked child: kept, never used nor closed */
    private static array $abandoned = [];

    /**
     * @param \Redis|\Closure $redis     a connected \Redis (reconnected with its host, port, auth and db after close()),
     *                                   or a factory fn (): \Redis that returns a connected one
     * @param string          $stream    the stream's key; `STREAM:delayed` and `STREAM:dead` are beside it
     * @param string          $group     the consumer group (created at the stream's start, with the stream, if missing)
     * @param float           $claimIdle seconds an entry may go without its holder's renewal before another consumer takes it
     * @param string|null     $consumer  this consumer's name in the group; default host:pid:random
     */
    public function __construct(
        \Redis|\Closure $redis,
        private readonly string $stream,
        private readonly string $group = 'forklift',
        private readonly float $claimIdle = 60.0,
        ?string $consumer = null,
    ) {
        $what = 'Forklift\\Queue\\RedisStream';
        if ($redis instanceof \Redis) {
            if (!$redis->isConnected()) {
                throw new InvalidArgumentException("$what: the \\Redis given is not connected: connect() it first, or pass a factory fn (): \\Redis");
            }
            $this->redis = $redis;
            $this->connect = self::reconnector($redis);
        } else {
            $this->redis = null;
            $this->connect = $redis;
        }
        if ($stream === '' || $group === '') {
            throw new InvalidArgumentException("$what: \$stream and \$group must not be empty");
        }
        if (!($claimIdle >= 0.1) || is_infinite($claimIdle)) {
            throw new InvalidArgumentException("$what: \$claimIdle must be 0.1 seconds or more (how long a silent consumer keeps its messages), $claimIdle given");
        }
        if ($consumer === '') {
            throw new InvalidArgumentException("$what: \$consumer must not be empty; leave it null for host:pid:random");
        }
        $this->consumer = $consumer;
    }

    /** Adds an entry (for producers and tests); returns its id. */
    public function put(string $body): string
    {
        return (string) $this->redis()->xAdd($this->stream, '*', ['body' => $body]);
    }

    /** This consumer's name in the group. */
    public function consumer(): string
    {
        return $this->consumer ??= gethostname() . ':' . getmypid() . ':' . bin2hex(random_bytes(3));
    }

    public function receive(float $wait = 0.0): ?Message
    {
        $r = $this->redis();
        $r->eval(self::PROMOTE, ["$this->stream:delayed", $this->stream, (string) (int) (microtime(true) * 1000)], 2);
        if (($m = $this->claim($r)) !== null) {
            return $m;
        }
        if ($wait > 0) {
            // A blocking read must outlast the block: a read timeout shorter than it would drop the
            // connection. Restored after; phpredis reads 0 as "PHP's default_socket_timeout" only
            // when it connects, and as "do not wait at all" when set later.
            $timeout = (float) $r->getOption(\Redis::OPT_READ_TIMEOUT);
            $timeout = $timeout > 0 ? $timeout : (float) ini_get('default_socket_timeout');
            $r->setOption(\Redis::OPT_READ_TIMEOUT, (string) ($wait + 5.0));
            try {
                $got = $r->xReadGroup($this->group, $this->consumer(), [$this->stream => '>'], 1, max(1, (int) round($wait * 1000)));
            } finally {
                $r->setOption(\Redis::OPT_READ_TIMEOUT, (string) $timeout);
            }
        } else {
            $got = $r->xReadGroup($this->group, $this->consumer(), [$this->stream => '>'], 1);
        }
        foreach ($got[$this->stream] ?? [] as $id => $fields) {
            return $this->message((string) $id, $fields, 1);
        }

        return null;
    }

    public function ack(Message $message): void
    {
        unset($this->renewed[$message->id]);
        $this->redis()->multi()
            ->xAck($this->stream, $this->group, [$message->id])
            ->xDel($this->stream, [$message->id])
            ->exec();
    }

    /** A delay of 0 adds it to the stream's end at once; otherwise it waits in STREAM:delayed. */
    public function retry(Message $message, float $delay, string $cause): void
    {
        unset($this->renewed[$message->id]);
        $r = $this->redis()->multi()
            ->xAck($this->stream, $this->group, [$message->id])
            ->xDel($this->stream, [$message->id]);
        if ($delay > 0) {
            $r->zAdd("$this->stream:delayed", (int) ((microtime(true) + $delay) * 1000), "$message->attempts:$message->id:$message->body");
        } else {
            $r->xAdd($this->stream, '*', ['body' => $message->body, 'attempts' => (string) $message->attempts]);
        }
        $r->exec();
    }

    /** Moves it to the list STREAM:dead as JSON {id, body, attempts, cause, at}. */
    public function bury(Message $message, string $cause): void
    {
        unset($this->renewed[$message->id]);
        $body = preg_match('//u', $message->body) ? ['body' => $message->body] : ['body_base64' => base64_encode($message->body)];
        $dead = json_encode(['id' => $message->id, ...$body, 'attempts' => $message->attempts, 'cause' => $cause, 'at' => date(\DATE_ATOM)], \JSON_THROW_ON_ERROR | \JSON_UNESCAPED_SLASHES | \JSON_INVALID_UTF8_SUBSTITUTE);
        $this->redis()->multi()
            ->xAck($this->stream, $this->group, [$message->id])
            ->xDel($this->stream, [$message->id])
            ->rPush("$this->stream:dead", $dead)
            ->exec();
    }

    public function keepAlive(Message $message): bool
    {
        $last = $this->renewed[$message->id] ?? null;
        if ($last === null) {
            return false;
        }
        if (microtime(true) - $last < $this->claimIdle / 3) {
            return true;
        }
        if (!$this->redis()->eval(self::RENEW, [$this->stream, $this->group, $this->consumer(), $message->id], 1)) {
            // Another consumer took it over (this one was silent past claimIdle).
            unset($this->renewed[$message->id]);

            return false;
        }
        $this->renewed[$message->id] = microtime(true);

        return true;
    }

    /** Closes the connection; held entries stay held (holds are the group's). */
    public function close(): void
    {
        try {
            $this->redis?->close();
        } catch (\RedisException) {
            // Gone already.
        }
        $this->redis = null;
    }

    public function abandon(): void
    {
        if ($this->redis !== null) {
            // Not close(): the socket is the parent's too. Kept until the child exits.
            self::$abandoned[] = $this->redis;
        }
        $this->redis = null;
        $this->renewed = [];
        if ($this->consumer !== null && str_starts_with($this->consumer, gethostname() . ':')) {
            $this->consumer = null; // the child is another consumer
        }
    }

    public function describe(): string
    {
        return "redis stream $this->stream (group $this->group, consumer {$this->consumer()}, dead letters in $this->stream:dead)";
    }

    /** Takes over one entry that its holder left silent past claimIdle, now and then. */
    private function claim(\Redis $r): ?Message
    {
        $now = microtime(true);
        if ($now < $this->nextClaim) {
            return null;
        }
        $got = $r->rawCommand('XAUTOCLAIM', $this->stream, $this->group, $this->consumer(), (string) (int) ($this->claimIdle * 1000), $this->claimCursor, 'COUNT', '1');
        if (!\is_array($got)) {
            throw new \RuntimeException("XAUTOCLAIM on $this->stream failed: " . ($r->getLastError() ?? 'no reply') . ' (it needs Redis 6.2 or later)');
        }
        $this->claimCursor = (string) $got[0];
        $entry = $got[1][0] ?? null;
        if ($entry === null) {
            // Nothing to take over: look again in a quarter of claimIdle.
            $this->nextClaim = $now + max(0.05, $this->claimIdle / 4);

            return null;
        }
        [$id, $flat] = $entry;
        $fields = [];
        for ($i = 0; $i + 1 < \count($flat); $i += 2) {
            $fields[$flat[$i]] = $flat[$i + 1];
        }
        $pending = $r->rawCommand('XPENDING', $this->stream, $this->group, $id, $id, '1');
        $deliveries = (int) ($pending[0][3] ?? 2);

        return $this->message((string) $id, $fields, $deliveries);
    }

    /** @param array<string, string> $fields */
    private function message(string $id, array $fields, int $deliveries): Message
    {
        $this->renewed[$id] = microtime(true);

        return new Message($id, (string) ($fields['body'] ?? ''), (int) ($fields['attempts'] ?? 0) + $deliveries, ['fields' => $fields]);
    }

    private function redis(): \Redis
    {
        if ($this->redis === null) {
            $redis = ($this->connect)();
            if (!$redis instanceof \Redis || !$redis->isConnected()) {
                throw new InvalidArgumentException('Forklift\\Queue\\RedisStream: the factory must return a connected \\Redis, ' . get_debug_type($redis) . ' returned');
            }
            $this->redis = $redis;
        }
        if (!$this->grouped) {
            // BUSYGROUP when it exists: fine. From 0: entries added before the group are work too.
            $this->redis->rawCommand('XGROUP', 'CREATE', $this->stream, $this->group, '0', 'MKSTREAM');
            $this->redis->clearLastError();
            $this->grouped = true;
        }

        return $this->redis;
    }

    /** @return \Closure(): \Redis a new connection like `$redis` (host, port, timeouts, auth, db) */
    private static function reconnector(\Redis $redis): \Closure
    {
        $host = $redis->getHost();
        $port = $redis->getPort();
        $timeout = $redis->getTimeout();
        $readTimeout = $redis->getReadTimeout();
        $auth = $redis->getAuth();
        $db = $redis->getDBNum();

        return static function () use ($host, $port, $timeout, $readTimeout, $auth, $db): \Redis {
            $r = new \Redis();
            $r->connect($host, $port, (float) $timeout, null, 0, (float) $readTimeout);
            if ($auth !== null && $auth !== false) {
                $r->auth($auth);
            }
            if ($db) {
                $r->select($db);
            }

            return $r;
        };
    }
}
