<?php

namespace Forklift\Tests\Support;

/**
 * A throw-away server on loopback for the integration tests (MariaDB, Redis, beanstalkd): its own
 * temp dir, a free port, started by the test, ready when it answers (the answer is the event;
 * bounded, and given up on if it died, with its log in the exception), stopped and reaped after.
 * Only the process that started it stops it: a forked child that ends leaves it alone.
 */
abstract class LoopbackServer
{
    public readonly int $port;
    protected string $dir;
    private int $pid = 0;
    private int $owner;
    /** @var resource|null the server's process, closed (reaped) in stop() */
    private $server = null;

    /** Whether the server answers on its port now. */
    abstract protected function answers(): bool;

    /**
     * @param string $package the Debian package that has `$binary`
     * @param callable(string $dir, int $port): list<string> $command
     */
    protected function start(string $binary, string $package, callable $command, ?array $env = null): void
    {
        if (!is_executable($binary)) {
            throw new \RuntimeException("$binary is missing: run scripts/setup.sh (it installs Debian's $package)");
        }
        $this->owner = getmypid();
        $this->dir = DaemonKit::tempDir();
        $this->port = self::freePort();
        $log = "$this->dir/server.log";
        try {
            $argv = $command($this->dir, $this->port);
        } catch (\Throwable $e) {
            DaemonKit::removeDir($this->dir);
            throw $e;
        }
        $this->server = proc_open($argv, [0 => ['file', '/dev/null', 'r'], 1 => ['file', $log, 'w'], 2 => ['file', $log, 'a']], $pipes, $this->dir, $env);
        if (!is_resource($this->server)) {
            DaemonKit::removeDir($this->dir);
            throw new \RuntimeException("could not start $binary");
        }
        $this->pid = proc_get_status($this->server)['pid'];
        $deadline = microtime(true) + 30;
        while (!$this->answers()) {
            if (microtime(true) > $deadline || !DaemonKit::alive($this->pid)) {
                $text = (string) @file_get_contents($log);
                $this->stop();
                throw new \RuntimeException(basename($binary) . " did not start on 127.0.0.1:$this->port: $text");
            }
            usleep(20000);
        }
    }

    protected static function freePort(): int
    {
        $s = stream_socket_server('tcp://127.0.0.1:0');
        $port = (int) substr(strrchr(stream_socket_get_name($s, false), ':'), 1);
        fclose($s);
        return $port;
    }

    /** Sends `$request` over plain TCP; the first line of the answer (false: no answer). */
    protected function ask(string $request): string|false
    {
        $c = @stream_socket_client("tcp://127.0.0.1:$this->port", $errno, $error, 1);
        if ($c === false) {
            return false;
        }
        stream_set_timeout($c, 1);
        fwrite($c, $request);
        $line = fgets($c);
        fclose($c);
        return $line;
    }

    /** Kills the server, reaps it and removes its temp dir; safe to call twice. */
    public function stop(): void
    {
        if (!isset($this->owner) || getmypid() !== $this->owner) {
            return; // not started, or a forked copy of this object: the server is its parent's
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
