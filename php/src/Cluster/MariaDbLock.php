<?php

declare(strict_types=1);

namespace Forklift\Cluster;

/**
 * A leader lock on MySQL/MariaDB: `GET_LOCK()` held by a connection of its own. The server
 * releases the lock when that connection ends, so a holder that dies — `kill -9` included —
 * leaves no stuck lock: the kernel closes its socket and the server lets the lock go at once; a
 * holder host that vanishes without closing (power, network) is dropped after `$timeout` seconds
 * of silence (the connection's `wait_timeout`; the dispatcher speaks every `$every` seconds).
 *
 * The connection belongs to the process that opened it (the dispatcher). A forked child gets a
 * copy of the object: it never uses or closes the inherited connection (a job child ends with
 * `_exit`, which sends no COM_QUIT, and closing a copied socket does not end the parent's
 * connection); if a child calls the lock, it opens a connection of its own, which holds nothing.
 * Do not close this connection in an `on_fork()` hook: that would release the lock.
 *
 * Who holds the lock is written in a small table (`forklift_leader`: name, holder "host:pid",
 * the holder's connection id, since) by the holder after `GET_LOCK()` succeeds; a row whose
 * connection no longer holds the lock is not reported.
 */
final class MariaDbLock implements Lock
{
    private ?\PDO $pdo = null;
    /** The process that opened `$pdo`. */
    private int $owner = 0;
    /** Connections inherited from the parent: kept, never used or closed (see the class). */
    private array $inherited = [];
    /** @var \Closure(): \PDO */
    private readonly \Closure $connect;
    private readonly string $identity;

    /**
     * @param string            $name     the lock's name on the server (1 to 64 characters); one per daemon
     * @param callable(): \PDO  $connect  opens a new connection (errors as exceptions)
     * @param float             $timeout  seconds of silence after which the server drops a holder that vanished
     */
    public function __construct(
        private readonly string $name,
        callable $connect,
        private readonly float $timeout = 10.0,
        private readonly string $table = 'forklift_leader',
        ?string $host = null,
    ) {
        if ($name === '' || strlen($name) > 64) {
            throw new \InvalidArgumentException("MariaDbLock: \$name must be 1 to 64 characters (a GET_LOCK name), \"$name\" given");
        }
        if (preg_match('/^[A-Za-z_][A-Za-z0-9_]{0,63}$/', $table) !== 1) {
            throw new \InvalidArgumentException("MariaDbLock: table name \"$table\": letters, digits and _ only");
        }
        if (!($timeout >= 1.0 && $timeout <= 86400.0)) {
            throw new \InvalidArgumentException("MariaDbLock: \$timeout must be 1 to 86400 seconds, $timeout given");
        }
        $this->connect = \Closure::fromCallable($connect);
        $this->identity = ($host ?? (gethostname() ?: 'localhost'));
    }

    /** A lock on the server of `$dsn` (`mysql:host=...;port=...;dbname=...`). */
    public static function connect(
        string $name,
        string $dsn,
        string $user,
        string $password,
        float $timeout = 10.0,
        string $table = 'forklift_leader',
        ?string $host = null,
    ): self {
        return new self($name, static function () use ($dsn, $user, $password, $timeout): \PDO {
            // A read on a connection whose server went silent returns within the timeout, not
            // after the default day: the dispatcher's loop waits for it.
            $before = ini_set('mysqlnd.net_read_timeout', (string) (int) ceil($timeout));
            try {
                return new \PDO($dsn, $user, $password, [
                    \PDO::ATTR_ERRMODE => \PDO::ERRMODE_EXCEPTION,
                    \PDO::ATTR_TIMEOUT => (int) ceil($timeout),
                ]);
            } finally {
                if ($before !== false) {
                    ini_set('mysqlnd.net_read_timeout', $before);
                }
            }
        }, $timeout, $table, $host);
    }

    public function acquire(): bool
    {
        return $this->call(function (\PDO $db): bool {
            if ($this->ours($db)) {
                return true; // GET_LOCK again would nest it (MariaDB counts), and one release would not free it
            }
            if ((int) $this->value($db, 'SELECT GET_LOCK(?, 0)', [$this->name]) !== 1) {
                return false;
            }
            $this->write($db);
            return true;
        });
    }

    public function held(): bool
    {
        try {
            return $this->call(fn (\PDO $db): bool => $this->ours($db));
        } catch (\PDOException $e) {
            // The connection died, and with it the lock on the server: a new connection takes
            // it again if nobody else has meanwhile; if that fails too, the exception says why.
            return $this->acquire();
        }
    }

    public function release(): void
    {
        if ($this->pdo === null || $this->owner !== getmypid()) {
            return;
        }
        try {
            $this->value($this->pdo, 'SELECT RELEASE_LOCK(?)', [$this->name]);
        } finally {
            // Ending the connection ends whatever it held, whatever RELEASE_LOCK said.
            $this->drop();
        }
    }

    public function holder(): ?string
    {
        $holder = $this->call(fn (\PDO $db) => $this->value(
            $db,
            "SELECT holder FROM `$this->table` WHERE name = ? AND connection_id = IS_USED_LOCK(?)",
            [$this->name, $this->name]
        ));
        return $holder === false || $holder === null ? null : (string) $holder;
    }

    private function ours(\PDO $db): bool
    {
        return (int) $this->value($db, 'SELECT COALESCE(IS_USED_LOCK(?) = CONNECTION_ID(), 0)', [$this->name]) === 1;
    }

    private function write(\PDO $db): void
    {
        $db->prepare("REPLACE INTO `$this->table` (name, holder, connection_id, since) VALUES (?, ?, CONNECTION_ID(), ?)")
            ->execute([$this->name, $this->identity . ':' . getmypid(), microtime(true)]);
    }

    private function value(\PDO $db, string $sql, array $params): mixed
    {
        $st = $db->prepare($sql);
        $st->execute($params);
        return $st->fetchColumn();
    }

    /** This process's connection, opened (and the table made) on first use. */
    private function db(): \PDO
    {
        if ($this->pdo !== null && $this->owner !== getmypid()) {
            // A forked copy: the parent's connection stays untouched.
            $this->inherited[] = $this->pdo;
            $this->pdo = null;
        }
        if ($this->pdo === null) {
            $pdo = ($this->connect)();
            $pdo->setAttribute(\PDO::ATTR_ERRMODE, \PDO::ERRMODE_EXCEPTION);
            $pdo->exec('SET SESSION wait_timeout = ' . (int) ceil($this->timeout));
            $pdo->exec("CREATE TABLE IF NOT EXISTS `$this->table` (
                name VARCHAR(64) NOT NULL PRIMARY KEY,
                holder VARCHAR(255) NOT NULL,
                connection_id BIGINT UNSIGNED NOT NULL,
                since DOUBLE NOT NULL
            )");
            $this->pdo = $pdo;
            $this->owner = getmypid();
        }
        return $this->pdo;
    }

    /**
     * Runs `$f` on this process's connection; a connection that failed is dropped, to be opened
     * again at the next call, and the exception goes on.
     *
     * @template T
     * @param \Closure(\PDO): T $f
     * @return T
     */
    private function call(\Closure $f): mixed
    {
        try {
            return $f($this->db());
        } catch (\PDOException $e) {
            $this->drop();
            throw $e;
        }
    }

    private function drop(): void
    {
        $this->pdo = null;
    }
}
