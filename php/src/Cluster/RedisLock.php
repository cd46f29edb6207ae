<?php

declare(strict_types=1);

namespace Forklift\Cluster;

/**
 * A leader lock on Redis (phpredis): a key set with `NX` and a TTL, renewed by the holder at
 * each check, so a holder that dies — `kill -9`, a host gone — stops renewing and its key
 * expires: a standby takes over within `$ttl` + the daemon's `$every` seconds. Renewing and
 * releasing compare the value first (a Lua script): a holder never extends or deletes a key that
 * expired and was taken by another.
 *
 * The connection belongs to the process that opened it (the dispatcher). A forked child gets a
 * copy of the object and must not write on the parent's socket (the replies would go astray):
 * if a child calls the lock, it sets the inherited connection aside untouched (never closed: a
 * QUIT would end the parent's) and opens its own, which holds nothing. A connection that fails
 * is dropped and opened again at the next call.
 */
final class RedisLock implements Lock
{
    private const RENEW = <<<'LUA'
        if redis.call('get', KEYS[1]) == ARGV[1] then
            return redis.call('pexpire', KEYS[1], ARGV[2])
        end
        return 0
        LUA;
    private const RELEASE = <<<'LUA'
        if redis.call('get', KEYS[1]) == ARGV[1] then
            return redis.call('del', KEYS[1])
        end
        return 0
        LUA;

    private ?\Redis $redis = null;
    /** The process that opened `$redis`. */
    private int $owner = 0;
    /** Connections inherited from the parent: kept, never used or closed (see the class). */
    private array $inherited = [];
    /** @var \Closure(): \Redis */
    private readonly \Closure $connect;
    private readonly string $host;
    /** What this process writes in the key: "host:pid#token" (the token tells two lives of one pid apart). */
    private string $value = '';
    private int $valueOf = 0;

    /**
     * @param string             $key     the key holding the lock; one per daemon
     * @param callable(): \Redis $connect opens a new connection
     * @param float              $ttl     seconds a holder that stopped renewing keeps the lock
     */
    public function __construct(
        private readonly string $key,
        callable $connect,
        private readonly float $ttl = 10.0,
        ?string $host = null,
    ) {
        if ($key === '') {
            throw new \InvalidArgumentException('RedisLock: $key must not be empty');
        }
        if (!($ttl >= 0.1 && $ttl <= 86400.0)) {
            throw new \InvalidArgumentException("RedisLock: \$ttl must be 0.1 to 86400 seconds, $ttl given");
        }
        $this->connect = \Closure::fromCallable($connect);
        $this->host = $host ?? (gethostname() ?: 'localhost');
    }

    /** A lock on the Redis server at `$server`:`$port`. */
    public static function connect(
        string $key,
        string $server = '127.0.0.1',
        int $port = 6379,
        float $ttl = 10.0,
        ?string $password = null,
        int $database = 0,
        ?string $host = null,
    ): self {
        return new self($key, static function () use ($server, $port, $ttl, $password, $database): \Redis {
            $redis = new \Redis();
            // Neither the connect nor a reply may hold the dispatcher's loop longer than the TTL.
            $redis->connect($server, $port, min($ttl, 5.0), null, 0, min($ttl, 5.0));
            if ($password !== null) {
                $redis->auth($password);
            }
            if ($database !== 0) {
                $redis->select($database);
            }
            return $redis;
        }, $ttl, $host);
    }

    public function acquire(): bool
    {
        return $this->call(function (\Redis $r): bool {
            if ($r->get($this->key) === $this->value()) {
                return $this->renew($r); // ours already (a check that failed before, say)
            }
            return $r->set($this->key, $this->value(), ['nx', 'px' => $this->ttlMs()]) === true;
        });
    }

    public function held(): bool
    {
        return $this->call(fn (\Redis $r): bool => $this->renew($r));
    }

    public function release(): void
    {
        if ($this->redis === null || $this->owner !== getmypid()) {
            return;
        }
        $this->call(fn (\Redis $r) => $r->eval(self::RELEASE, [$this->key, $this->value()], 1));
    }

    public function holder(): ?string
    {
        $value = $this->call(fn (\Redis $r) => $r->get($this->key));
        if (!is_string($value)) {
            return null;
        }
        $hash = strrpos($value, '#');
        return $hash === false ? $value : substr($value, 0, $hash);
    }

    private function renew(\Redis $r): bool
    {
        return (int) $r->eval(self::RENEW, [$this->key, $this->value(), (string) $this->ttlMs()], 1) === 1;
    }

    private function ttlMs(): int
    {
        return (int) round($this->ttl * 1000);
    }

    private function value(): string
    {
        if ($this->valueOf !== getmypid()) {
            $this->valueOf = getmypid();
            $this->value = $this->host . ':' . getmypid() . '#' . bin2hex(random_bytes(8));
        }
        return $this->value;
    }

    /**
     * Runs `$f` on this process's connection (opened on first use); a failed connection is
     * dropped, to be opened again at the next call, and the exception goes on.
     *
     * @template T
     * @param \Closure(\Redis): T $f
     * @return T
     */
    private function call(\Closure $f): mixed
    {
        if ($this->redis !== null && $this->owner !== getmypid()) {
            $this->inherited[] = $this->redis; // a forked copy: the parent's socket stays untouched
            $this->redis = null;
        }
        try {
            if ($this->redis === null) {
                $this->redis = ($this->connect)();
                $this->owner = getmypid();
            }
            return $f($this->redis);
        } catch (\RedisException $e) {
            $this->redis = null;
            throw $e;
        }
    }
}
