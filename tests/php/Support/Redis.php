<?php

namespace Forklift\Tests\Support;

/**
 * A throw-away Redis server on loopback for the integration tests: a free port, its working
 * directory in a temp dir, nothing saved (no RDB, no AOF), no unix socket, started by the test and
 * stopped after it. Needs Debian's redis-server; client() needs php8.2-redis (phpredis).
 */
final class Redis
{
    public readonly int $port;
    private string $dir;
    private int $pid = 0;
    /** The process that started the server: a forked child that ends must not stop it. */
    private int $owner;
    /** @var resource|null the server's process, closed (reaped) in stop() */
    private $server = null;

    public function __construct()
    {
        if (!is_executable('/usr/bin/redis-server')) {
            throw new \RuntimeException('/usr/bin/redis-server is missing: install Debian\'s redis-server');
        }
        $this->owner = getmypid();
        $this->dir = DaemonKit::tempDir();
        $this->port = self::freePort();
        // No config file: the defaults plus these. `--save ''` turns RDB snapshots off; no
        // `--unixsocket`, so it listens on TCP only; the log goes to stdout (`--logfile ''`).
        $this->server = proc_open([
            '/usr/bin/redis-server', '--bind', '127.0.0.1', '--port', (string) $this->port,
            '--dir', $this->dir, '--save', '', '--appendonly', 'no', '--daemonize', 'no',
            '--logfile', '',
        ], [0 => ['file', '/dev/null', 'r'], 1 => ['file', "$this->dir/server.log", 'w'], 2 => ['file', "$this->dir/server.log", 'a']], $pipes);
        if (!is_resource($this->server)) {
            DaemonKit::removeDir($this->dir);
            throw new \RuntimeException('could not start /usr/bin/redis-server');
        }
        $this->pid = proc_get_status($this->server)['pid'];
        // Ready when it answers PING (the answer is the event; bounded, and given up on if it died).
        $deadline = microtime(true) + 30;
        while (!$this->answers()) {
            if (microtime(true) > $deadline || !DaemonKit::alive($this->pid)) {
                $log = (string) @file_get_contents("$this->dir/server.log");
                $this->stop();
                throw new \RuntimeException("redis-server did not start on 127.0.0.1:$this->port: $log");
            }
            usleep(20000);
        }
    }

    private static function freePort(): int
    {
        $s = stream_socket_server('tcp://127.0.0.1:0');
        $port = (int) substr(strrchr(stream_socket_get_name($s, false), ':'), 1);
        fclose($s);
        return $port;
    }

    /** Whether the server answers PING with +PONG (plain RESP: no phpredis needed to start it). */
    private function answers(): bool
    {
        $c = @stream_socket_client("tcp://127.0.0.1:$this->port", $errno, $error, 1);
        if ($c === false) {
            return false;
        }
        stream_set_timeout($c, 1);
        fwrite($c, "*1\r\n\$4\r\nPING\r\n");
        $line = fgets($c);
        fclose($c);
        return $line === "+PONG\r\n";
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

    /** Kills the server, reaps it and removes its temp dir; safe to call twice. */
    public function stop(): void
    {
        if (getmypid() !== $this->owner) {
            return; // a forked copy of this object: the server is its parent's
        }
        if ($this->pid > 0 && DaemonKit::alive($this->pid)) {
            posix_kill($this->pid, SIGTERM);
            if (!DaemonKit::waitGone([$this->pid], 30)) {
                posix_kill($this->pid, SIGKILL);
            }
        }
        if (is_resource($this->server)) {
            proc_close($this->server); // reaped: no zombie left in the test process
        }
        $this->server = null;
        $this->pid = 0;
        DaemonKit::removeDir($this->dir);
    }

    public function __destruct()
    {
        $this->stop();
    }
}
