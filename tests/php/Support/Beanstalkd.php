<?php

namespace Forklift\Tests\Support;

/**
 * A throw-away beanstalkd on loopback for the integration tests: a free port, its log in a temp
 * dir, started by the test and stopped after it. Needs Debian's beanstalkd; client() needs
 * php-pda-pheanstalk (Pheanstalk 4).
 *
 * No binlog (`-b`): the server lives for one test class and is never restarted, so jobs have
 * nothing to survive, and without it beanstalkd writes and fsyncs nothing. A test that wants jobs
 * kept across a restart would need `-b` and a server started twice on one dir.
 */
final class Beanstalkd
{
    private const PHEANSTALK_AUTOLOAD = '/usr/share/php/Pheanstalk/autoload.php';

    public readonly int $port;
    private string $dir;
    private int $pid = 0;
    /** The process that started the server: a forked child that ends must not stop it. */
    private int $owner;
    /** @var resource|null the server's process, closed (reaped) in stop() */
    private $server = null;

    public function __construct()
    {
        if (!is_executable('/usr/bin/beanstalkd')) {
            throw new \RuntimeException('/usr/bin/beanstalkd is missing: install Debian\'s beanstalkd');
        }
        $this->owner = getmypid();
        $this->dir = DaemonKit::tempDir();
        $this->port = self::freePort();
        // Without LISTEN_PID/LISTEN_FDS: with them (systemd socket activation) it would ignore -l/-p.
        $env = array_diff_key(getenv(), ['LISTEN_PID' => 1, 'LISTEN_FDS' => 1, 'LISTEN_FDNAMES' => 1]);
        $this->server = proc_open(
            ['/usr/bin/beanstalkd', '-l', '127.0.0.1', '-p', (string) $this->port],
            [0 => ['file', '/dev/null', 'r'], 1 => ['file', "$this->dir/server.log", 'w'], 2 => ['file', "$this->dir/server.log", 'a']],
            $pipes,
            $this->dir,
            $env
        );
        if (!is_resource($this->server)) {
            DaemonKit::removeDir($this->dir);
            throw new \RuntimeException('could not start /usr/bin/beanstalkd');
        }
        $this->pid = proc_get_status($this->server)['pid'];
        // Ready when it answers "stats" with OK (the answer is the event; bounded, and given up on
        // if it died).
        $deadline = microtime(true) + 30;
        while (!$this->answers()) {
            if (microtime(true) > $deadline || !DaemonKit::alive($this->pid)) {
                $log = (string) @file_get_contents("$this->dir/server.log");
                $this->stop();
                throw new \RuntimeException("beanstalkd did not start on 127.0.0.1:$this->port: $log");
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

    /** Whether the server answers `stats` with `OK <bytes>` (plain protocol: no Pheanstalk needed). */
    private function answers(): bool
    {
        $c = @stream_socket_client("tcp://127.0.0.1:$this->port", $errno, $error, 1);
        if ($c === false) {
            return false;
        }
        stream_set_timeout($c, 1);
        fwrite($c, "stats\r\n");
        $line = fgets($c);
        fclose($c);
        return is_string($line) && preg_match('/^OK \d+\r\n$/', $line) === 1;
    }

    public function dsn(): string
    {
        return "beanstalkd://127.0.0.1:$this->port";
    }

    /** A new Pheanstalk 4 connection to the server (it connects on its first command). */
    public function client(): \Pheanstalk\Pheanstalk
    {
        if (!class_exists(\Pheanstalk\Pheanstalk::class)) {
            if (!is_file(self::PHEANSTALK_AUTOLOAD)) {
                throw new \RuntimeException(self::PHEANSTALK_AUTOLOAD . ' is missing: install Debian\'s php-pda-pheanstalk');
            }
            require_once self::PHEANSTALK_AUTOLOAD;
        }
        return \Pheanstalk\Pheanstalk::create('127.0.0.1', $this->port);
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
