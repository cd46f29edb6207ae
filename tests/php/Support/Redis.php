<?php

namespace Forklift\Tests\Support;

/**
 * A throw-away Redis server on loopback: nothing saved (no RDB, no AOF), no unix socket. Needs
 * Debian's redis-server; client() needs php8.2-redis (phpredis).
 */
final class Redis extends LoopbackServer
{
    public function __construct()
    {
        // No config file: the defaults plus these; the log goes to stdout (`--logfile ''`).
        $this->start('/usr/bin/redis-server', 'redis-server', static fn (string $dir, int $port) => [
            '/usr/bin/redis-server', '--bind', '127.0.0.1', '--port', (string) $port,
            '--dir', $dir, '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--logfile', '',
        ]);
    }

    /** PING answered with +PONG (plain RESP: no phpredis needed to start it). */
    protected function answers(): bool
    {
        return $this->ask("*1\r\n\$4\r\nPING\r\n") === "+PONG\r\n";
    }

    public function dsn(): string
    {
        return "redis://127.0.0.1:$this->port";
    }

    /** A new phpredis connection to the server. */
    public function client(): \Redis
    {
        if (!extension_loaded('redis')) {
            throw new \RuntimeException('the redis extension (phpredis) is not loaded: install Debian\'s php8.2-redis');
        }
        $redis = new \Redis();
        $redis->connect('127.0.0.1', $this->port, 5.0);
        return $redis;
    }
}
