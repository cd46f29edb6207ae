<?php

namespace Forklift\Tests\Support;

/** A PSR-3-shaped logger that keeps the lines (the daemon calls log($level, $message, $context)). */
final class MemoryLogger
{
    /** @var list<array{0: string, 1: string}> */
    public array $lines = [];

    public function log($level, $message, array $context = []): void
    {
        $this->lines[] = [(string) $level, (string) $message];
    }

    public function contains(string $needle): bool
    {
        foreach ($this->lines as [, $m]) {
            if (str_contains($m, $needle)) {
                return true;
            }
        }
        return false;
    }

    public function text(): string
    {
        return implode("\n", array_map(fn ($l) => "$l[0]: $l[1]", $this->lines));
    }
}

/** Temp dirs for pid files and a started `bin/forklift run`, read line by line from its stderr. */
final class DaemonKit
{
    public static function tempDir(): string
    {
        $dir = sys_get_temp_dir() . '/forklift-test-' . getmypid() . '-' . bin2hex(random_bytes(4));
        mkdir($dir, 0700);
        return $dir;
    }

    public static function removeDir(string $dir): void
    {
        if (!is_dir($dir)) {
            return;
        }
        foreach (scandir($dir) as $f) {
            if ($f !== '.' && $f !== '..') {
                $p = "$dir/$f";
                is_dir($p) && !is_link($p) ? self::removeDir($p) : unlink($p);
            }
        }
        rmdir($dir);
    }

    /** Whether a process exists and is not a zombie. */
    public static function alive(int $pid): bool
    {
        $stat = @file_get_contents("/proc/$pid/stat");
        if ($stat === false) {
            return false;
        }
        $state = explode(' ', substr($stat, strrpos($stat, ')') + 2))[0];
        return $state !== 'Z' && $state !== 'X';
    }

    /** Waits (bounded) until none of `$pids` is alive; true if so. /proc is the event source. */
    public static function waitGone(array $pids, float $timeout): bool
    {
        $deadline = microtime(true) + $timeout;
        do {
            $left = array_filter($pids, fn ($p) => self::alive($p));
            if ($left === []) {
                return true;
            }
            usleep(5000);
        } while (microtime(true) < $deadline);
        return false;
    }
}

/** `bin/forklift ARGS` started in the background; its stderr is read as it comes. */
final class CliProcess
{
    /** @var resource */
    private $proc;
    /** @var resource */
    private $err;
    private string $buffer = '';
    public string $log = '';

    /** @param list<string> $prefix a command the PHP runs behind (it must exec it: the pid stays) */
    public function __construct(array $args, array $env = [], array $prefix = [])
    {
        $root = dirname(__DIR__, 3);
        $cmd = [...$prefix, PHP_BINARY, '-d', 'extension=' . Procfs::loadedExtension(), $root . '/bin/forklift', ...$args];
        $this->proc = proc_open(
            $cmd,
            [0 => ['file', '/dev/null', 'r'], 1 => ['file', '/dev/null', 'w'], 2 => ['pipe', 'w']],
            $pipes,
            null,
            $env === [] ? null : $env + getenv()
        );
        $this->err = $pipes[2];
        stream_set_blocking($this->err, false);
        $this->pid = proc_get_status($this->proc)['pid'];
    }

    private int $pid;

    public function pid(): int
    {
        // Not proc_get_status() each time: it gives the exit code only once.
        return $this->pid;
    }

    /** Reads stderr until a line matches `$regex` (returns its matches) or `$timeout` passes. */
    public function waitFor(string $regex, float $timeout = 10.0): ?array
    {
        $deadline = microtime(true) + $timeout;
        while (true) {
            while (($nl = strpos($this->buffer, "\n")) !== false) {
                $line = substr($this->buffer, 0, $nl);
                $this->buffer = substr($this->buffer, $nl + 1);
                if (preg_match($regex, $line, $m)) {
                    return $m;
                }
            }
            $left = $deadline - microtime(true);
            if ($left <= 0) {
                return null;
            }
            $r = [$this->err];
            $w = $e = null;
            if (@stream_select($r, $w, $e, 0, (int) min(200000, $left * 1e6)) > 0) {
                $chunk = fread($this->err, 65536);
                if ($chunk === '' || $chunk === false) {
                    if (feof($this->err)) {
                        return null;
                    }
                    continue;
                }
                $this->log .= $chunk;
                $this->buffer .= $chunk;
            }
        }
    }

    /** Waits for the process to exit (bounded); its exit code, or null if it is still running. */
    public function wait(float $timeout = 30.0): ?int
    {
        if ($this->exit !== null) {
            return $this->exit;
        }
        $deadline = microtime(true) + $timeout;
        while (microtime(true) < $deadline) {
            $this->drain();
            $s = proc_get_status($this->proc);
            if (!$s['running']) {
                $this->drain();
                $this->exit = $s['exitcode'];
                return $s['exitcode'];
            }
            $r = [$this->err];
            $w = $e = null;
            @stream_select($r, $w, $e, 0, 20000);
        }
        return null;
    }

    public ?int $exit = null;

    private function drain(): void
    {
        while (($chunk = fread($this->err, 65536)) !== '' && $chunk !== false) {
            $this->log .= $chunk;
            $this->buffer .= $chunk;
        }
    }

    public function kill(int $signal): void
    {
        posix_kill($this->pid(), $signal);
    }

    public function __destruct()
    {
        if ($this->exit === null && proc_get_status($this->proc)['running']) {
            posix_kill($this->pid, SIGKILL);
        }
        proc_close($this->proc);
    }
}

/** Runs `bin/forklift ARGS` to its end. */
function forklift_cli(array $args): array
{
    $root = dirname(__DIR__, 3);
    $proc = proc_open(
        [PHP_BINARY, '-d', 'extension=' . Procfs::loadedExtension(), $root . '/bin/forklift', ...$args],
        [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']],
        $pipes
    );
    $out = (string) stream_get_contents($pipes[1]);
    $err = (string) stream_get_contents($pipes[2]);
    return ['status' => proc_close($proc), 'out' => $out, 'err' => $err];
}

/** Talks to a status socket directly (no pid file needed). */
final class Probe
{
    public static function status(string $socket): string
    {
        $c = stream_socket_client("unix://$socket", $errno, $error, 5);
        if ($c === false) {
            throw new \RuntimeException("connect $socket: $error");
        }
        fwrite($c, "status\n");
        $out = stream_get_contents($c);
        fclose($c);
        return (string) $out;
    }
}
