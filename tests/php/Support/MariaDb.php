<?php

namespace Forklift\Tests\Support;

/**
 * A throw-away MariaDB server on loopback for the integration tests: its own data directory in
 * a temp dir, a free port, started by the test and stopped after it. Needs Debian's mariadb-server
 * (scripts/setup.sh installs it).
 */
final class MariaDb extends LoopbackServer
{
    public function __construct()
    {
        if (!is_executable('/usr/bin/mariadb-install-db')) {
            throw new \RuntimeException('/usr/bin/mariadb-install-db is missing: run scripts/setup.sh (it installs mariadb-server)');
        }
        $user = posix_getpwuid(posix_geteuid())['name'];
        $this->start('/usr/sbin/mariadbd', 'mariadb-server', static function (string $dir, int $port) use ($user): array {
            // A fresh data directory first.
            $install = proc_open([
                '/usr/bin/mariadb-install-db', '--no-defaults', "--datadir=$dir/data",
                '--auth-root-authentication-method=normal', '--skip-test-db', "--user=$user",
            ], [1 => ['file', "$dir/install.log", 'w'], 2 => ['file', "$dir/install.log", 'a']], $pipes);
            if (proc_close($install) !== 0) {
                throw new \RuntimeException('mariadb-install-db failed: ' . file_get_contents("$dir/install.log"));
            }
            return [
                '/usr/sbin/mariadbd', '--no-defaults', "--datadir=$dir/data", "--socket=$dir/sock",
                "--port=$port", '--bind-address=127.0.0.1', "--pid-file=$dir/pid",
                "--user=$user", '--skip-name-resolve', '--innodb-buffer-pool-size=16M',
            ];
        });
        $this->pdo()->exec('CREATE DATABASE forklift_test');
    }

    /** It answers a query. */
    protected function answers(): bool
    {
        try {
            $this->pdo()->query('SELECT 1');
            return true;
        } catch (\PDOException) {
            return false;
        }
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
}
