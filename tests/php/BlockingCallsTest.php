<?php

namespace Forklift\Tests;

use Forklift\TimeoutException;
use PHPUnit\Framework\TestCase;

/**
 * Which blocking calls Forklift\timeout() cuts short at its deadline, and which it cannot: the
 * README's two lists, each entry tested. PHP retries a socket stream's poll(2) after a signal for
 * the stream's whole timeout and a plain stream's read(2) until data, so those return late; inside
 * timeout() socket streams wait at most the deadline rounded up to a whole second.
 */
final class BlockingCallsTest extends TestCase
{
    private const DEADLINE = 0.3;

    /** @var list<resource> */
    private static array $keep = [];
    private ?string $oldSocketTimeout = null;

    protected function setUp(): void
    {
        // A socket's own timeout far beyond the deadline: only timeout() can make it return early.
        $this->oldSocketTimeout = ini_set('default_socket_timeout', '30');
    }

    protected function tearDown(): void
    {
        ini_set('default_socket_timeout', $this->oldSocketTimeout);
        foreach (self::$keep as $r) {
            if (is_resource($r)) {
                @fclose($r);
            }
        }
        self::$keep = [];
    }

    /** Runs $call under timeout(DEADLINE); returns the seconds until TimeoutException. */
    private function secondsUntilTimeout(callable $call): float
    {
        $started = hrtime(true);
        try {
            \Forklift\timeout(self::DEADLINE, $call);
            $this->fail('no TimeoutException');
        } catch (TimeoutException) {
            return (hrtime(true) - $started) / 1e9;
        }
    }

    private static function silentServer(): string
    {
        $server = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr);
        self::$keep[] = $server;
        return stream_socket_get_name($server, false);
    }

    /** @return array<string, array{callable}> calls that return at the deadline */
    public function interruptedAtTheDeadline(): array
    {
        return [
            'sleep()' => [fn () => sleep(30)],
            'usleep()' => [fn () => usleep(30_000_000)],
            'time_nanosleep()' => [fn () => time_nanosleep(30, 0)],
            'a CPU loop' => [function () {
                while (true) {
                }
            }],
            'stream_select()' => [function () {
                $pair = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
                self::$keep = array_merge(self::$keep, $pair);
                $r = [$pair[0]];
                $w = $e = null;
                stream_select($r, $w, $e, 30);
            }],
            'socket_read() of ext/sockets' => [function () {
                socket_create_pair(AF_UNIX, SOCK_STREAM, 0, $pair);
                socket_read($pair[0], 10);
            }],
            'fopen() of a FIFO with no writer' => [function () {
                $fifo = sys_get_temp_dir() . '/forklift-fifo-' . getmypid();
                @unlink($fifo);
                posix_mkfifo($fifo, 0600);
                try {
                    fopen($fifo, 'r');
                } finally {
                    unlink($fifo);
                }
            }],
            'pcntl_sigwaitinfo()' => [fn () => pcntl_sigwaitinfo([SIGUSR2])],
            'Forklift\'s own wait()' => [fn () => \Forklift\fork(fn () => sleep(30), timeout: 5.0)->wait()],
        ];
    }

    /** @dataProvider interruptedAtTheDeadline */
    public function test_these_calls_return_at_the_deadline(callable $call): void
    {
        $took = $this->secondsUntilTimeout($call);
        $this->assertGreaterThanOrEqual(self::DEADLINE, $took);
        $this->assertLessThan(self::DEADLINE + 0.25, $took);
    }

    /** @return array<string, array{callable}> socket streams: bounded by the deadline, rounded up */
    public function socketStreams(): array
    {
        return [
            'fgets() on a socket opened inside' => [function () {
                fgets(stream_socket_client('tcp://' . self::silentServer()));
            }],
            'file_get_contents() of a silent http:// server' => [function () {
                @file_get_contents('http://' . self::silentServer() . '/');
            }],
            'fwrite() of 10 MB nobody reads' => [function () {
                $pair = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
                self::$keep = array_merge(self::$keep, $pair);
                fwrite($pair[0], str_repeat('x', 10 << 20));
            }],
        ];
    }

    /** @dataProvider socketStreams */
    public function test_socket_streams_return_within_a_second_of_the_deadline(callable $call): void
    {
        $took = $this->secondsUntilTimeout($call);
        $this->assertGreaterThan(self::DEADLINE + 0.5, $took, 'not cut short: PHP retries the poll');
        $this->assertLessThan(self::DEADLINE + 1.5, $took, 'but bounded by the scope, not by the 30 s socket timeout');
        $this->assertSame('30', ini_get('default_socket_timeout'), 'the setting is back');
    }

    public function test_a_pipe_read_returns_only_when_the_peer_writes(): void
    {
        $proc = proc_open(['sh', '-c', 'sleep 0.8; echo late; exec sleep 5'], [1 => ['pipe', 'w']], $pipes);
        $took = $this->secondsUntilTimeout(fn () => fgets($pipes[1]));
        $this->assertGreaterThanOrEqual(0.75, $took, 'the read was not cut short at the deadline');
        // The exception came right after the read returned the line (it consumed it).
        stream_set_blocking($pipes[1], false);
        $this->assertFalse(fgets($pipes[1]));
        proc_terminate($proc, SIGKILL);
        proc_close($proc);
    }
}
