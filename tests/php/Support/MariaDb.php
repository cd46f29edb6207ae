<?php

namespace Forklift\Tests\Support;

/**
 * A throw-away MariaDB server on loopback for the integration tests: its own data directory in
 * a temp dir, a free port, started by the test and stopped after it. Needs Debian's mariadb-server
 * (scripts/setup.sh installs it).
 */
final class MariaDb
{
    public readonly int $port;
    private string $dir;
    private int $pid = 0;
    /** @var resource|null the server's process, closed (reaped) in stop() */
    private $server = null;

    public function __construct()
    {
        foreach (['/usr/sbin/mariadbd', '/usr/bin/mariadb-install-db'] as $bin) {
            if (!is_executable($bin)) {
                throw new \RuntimeException("$bin is missing: run scripts/setup.sh (it installs mariadb-server)");
            }
        }
        $this->dir = DaemonKit::tempDir();
        $this->port = self::freePort();
        $install = proc_open([
            '/usr/bin/mariadb-install-db', '--no-defaults', "--datadir=$this->dir/data",
            '--auth-root-authentication-method=normal', '--skip-test-db', '--user=' . posix_getpwuid(posix_geteuid())['name'],
        ], [1 => ['file', "$this->dir/install.log", 'w'], 2 => ['file', "$this->dir/install.log", 'a']], $pipes);
        if (proc_close($install) !== 0) {
            throw new \RuntimeException('mariadb-install-db failed: ' . file_get_contents("$this->dir/install.log"));
        }
        $this->server = proc_open([
            '/usr/sbin/mariadbd', '--no-defaults', "--datadir=$this->dir/data", "--socket=$this->dir/sock",
            "--port=$this->port", '--bind-address=127.0.0.1', "--pid-file=$this->dir/pid",
            '--user=' . posix_getpwuid(posix_geteuid())['name'], '--skip-name-resolve', '--innodb-buffer-pool-size=16M',
        ], [0 => ['file', '/dev/null', 'r'], 1 => ['file', "$this->dir/server.log", 'w'], 2 => ['file', "$this->dir/server.log", 'a']], $pipes);
        $this->pid = proc_get_status($this->server)['pid'];
        // Ready when it answers (the socket is the event; bounded).
        $deadline = microtime(true) + 30;
        while (true) {
            try {
                $this->pdo()->query('SELECT 1');
                break;
            } catch (\PDOException $e) {
                if (microtime(true) > $deadline || !DaemonKit::alive($this->pid)) {
                    throw new \RuntimeException('mariadbd did not start: ' . @file_get_contents("$this->dir/server.log"));
                }
                usleep(20000);
            }
        }
        $this->pdo()->exec('CREATE DATABASE forklift_test');
    }

    private static function freePort(): int
    {
        $s = stream_socket_server('tcp://127.0.0.1:0');
        $port = (int) substr(strrchr(stream_socket_get_name($s, false), ':'), 1);
        fclose($s);
        return $port;
    }

    public function dsn(string $db = 'forklift_test'): string
    {
        return "mysql:host=127.0.0.1;port=$this->port;dbname=$db";
    }

    public function pdo(string $db = ''): \PDO
    {
        return new \PDO($db === '' ? "mysql:host=127.0.0.1;port=$this->port" : $this->dsn($db), 'root', '', [
            \PDO::ATTR_ERRMODE => \PDO::ERRMODE_EXCEPTION,
        ]);
    }

    /** A fresh database for one test. */
    public function recreate(): void
    {
        $this->pdo()->exec('DROP DATABASE IF EXISTS forklift_test');
        $this->pdo()->exec('CREATE DATABASE forklift_test');
    }

    public function stop(): void
    {
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
}
