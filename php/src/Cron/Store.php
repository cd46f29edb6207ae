<?php

declare(strict_types=1);

namespace Forklift\Cron;

/**
 * Magento's `cron_schedule` table, exactly as Magento has it (schedule_id, job_code, status,
 * messages, created_at, scheduled_at, executed_at, finished_at; statuses pending, running,
 * success, missed, error; times in UTC as 'Y-m-d H:i:s'), and Forklift's own facts about each run
 * in a table of its own keyed by schedule_id (host, pid, outcome, exit code, signal, duration,
 * CPU, peak memory, the blackbox records as JSON): Magento's table keeps its schema.
 *
 * Over PDO: SQLite (the embedded default) or MySQL/MariaDB. The connection is made when first
 * needed and dropped before each fork ({@see Store::disconnect()}), so a job never shares it.
 */
final class Store
{
    public const PENDING = 'pending';
    public const RUNNING = 'running';
    public const SUCCESS = 'success';
    public const MISSED = 'missed';
    public const ERROR = 'error';

    private ?\PDO $pdo = null;
    /** @var \Closure(): \PDO */
    private \Closure $connect;

    /** @param callable(): \PDO $connect makes a new connection */
    public function __construct(
        callable $connect,
        private readonly string $table = 'cron_schedule',
        private readonly string $facts = 'forklift_cron_run',
    ) {
        foreach ([$table, $facts] as $name) {
            if (preg_match('/^[A-Za-z_][A-Za-z0-9_]{0,63}$/', $name) !== 1) {
                throw new \InvalidArgumentException("table name \"$name\": letters, digits and _ only");
            }
        }
        $this->connect = \Closure::fromCallable($connect);
    }

    public static function sqlite(string $file): self
    {
        return new self(static function () use ($file): \PDO {
            $pdo = new \PDO('sqlite:' . $file, null, null, [\PDO::ATTR_ERRMODE => \PDO::ERRMODE_EXCEPTION]);
            $pdo->exec('PRAGMA journal_mode = WAL');
            $pdo->exec('PRAGMA busy_timeout = 5000');
            return $pdo;
        });
    }

    public static function mysql(string $dsn, string $user, string $password, string $table = 'cron_schedule'): self
    {
        return new self(static function () use ($dsn, $user, $password): \PDO {
            $pdo = new \PDO($dsn, $user, $password, [\PDO::ATTR_ERRMODE => \PDO::ERRMODE_EXCEPTION]);
            // Times are written and read as UTC, as Magento does.
            $pdo->exec("SET time_zone = '+00:00'");
            return $pdo;
        }, $table);
    }

    private function db(): \PDO
    {
        return $this->pdo ??= ($this->connect)();
    }

    /** Drops the connection (before a fork: each side connects again when it needs to). */
    public function disconnect(): void
    {
        $this->pdo = null;
    }

    public function isMysql(): bool
    {
        return $this->db()->getAttribute(\PDO::ATTR_DRIVER_NAME) === 'mysql';
    }

    /** Creates the tables when they are missing (Magento's own schema for cron_schedule). */
    public function install(): void
    {
        $t = $this->table;
        $f = $this->facts;
        if ($this->isMysql()) {
            $this->db()->exec("CREATE TABLE IF NOT EXISTS `$t` (
                schedule_id INT UNSIGNED NOT NULL AUTO_INCREMENT,
                job_code VARCHAR(255) NOT NULL DEFAULT '0',
                status VARCHAR(7) NOT NULL DEFAULT 'pending',
                messages TEXT NULL,
                created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                scheduled_at TIMESTAMP NULL DEFAULT NULL,
                executed_at TIMESTAMP NULL DEFAULT NULL,
                finished_at TIMESTAMP NULL DEFAULT NULL,
                PRIMARY KEY (schedule_id),
                KEY CRON_SCHEDULE_JOB_CODE_STATUS_SCHEDULED_AT (job_code, status, scheduled_at),
                KEY CRON_SCHEDULE_SCHEDULED_AT_STATUS (scheduled_at, status)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4");
            $this->db()->exec("CREATE TABLE IF NOT EXISTS `$f` (
                schedule_id INT UNSIGNED NOT NULL PRIMARY KEY,
                host VARCHAR(255) NOT NULL, pid INT NOT NULL,
                outcome VARCHAR(32) NULL, exit_code INT NULL, signal_number INT NULL,
                duration DOUBLE NULL, cpu_time DOUBLE NULL, peak_memory BIGINT NULL, max_rss BIGINT NULL,
                records MEDIUMTEXT NULL
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4");
            return;
        }
        $this->db()->exec("CREATE TABLE IF NOT EXISTS \"$t\" (
            schedule_id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_code VARCHAR(255) NOT NULL DEFAULT '0',
            status VARCHAR(7) NOT NULL DEFAULT 'pending',
            messages TEXT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            scheduled_at TIMESTAMP NULL DEFAULT NULL,
            executed_at TIMESTAMP NULL DEFAULT NULL,
            finished_at TIMESTAMP NULL DEFAULT NULL
        )");
        $this->db()->exec("CREATE INDEX IF NOT EXISTS {$t}_job_code_status_scheduled_at ON \"$t\" (job_code, status, scheduled_at)");
        $this->db()->exec("CREATE INDEX IF NOT EXISTS {$t}_scheduled_at_status ON \"$t\" (scheduled_at, status)");
        $this->db()->exec("CREATE TABLE IF NOT EXISTS \"$f\" (
            schedule_id INTEGER PRIMARY KEY,
            host VARCHAR(255) NOT NULL, pid INTEGER NOT NULL,
            outcome VARCHAR(32) NULL, exit_code INTEGER NULL, signal_number INTEGER NULL,
            duration REAL NULL, cpu_time REAL NULL, peak_memory INTEGER NULL, max_rss INTEGER NULL,
            records TEXT NULL
        )");
    }

    public static function time(\DateTimeInterface $t): string
    {
        return \DateTimeImmutable::createFromInterface($t)
            ->setTimezone(new \DateTimeZone('UTC'))
            ->format('Y-m-d H:i:s');
    }

    public static function parse(string $utc): \DateTimeImmutable
    {
        return new \DateTimeImmutable($utc, new \DateTimeZone('UTC'));
    }

    /** Adds a pending row for `$code` at `$at` unless one exists; true if added. */
    public function schedule(string $code, \DateTimeInterface $at, \DateTimeInterface $now): bool
    {
        $t = $this->table;
        $when = self::time($at);
        $exists = $this->db()->prepare("SELECT 1 FROM $t WHERE job_code = ? AND scheduled_at = ? LIMIT 1");
        $exists->execute([$code, $when]);
        if ($exists->fetchColumn() !== false) {
            return false;
        }
        $this->db()->prepare("INSERT INTO $t (job_code, status, created_at, scheduled_at) VALUES (?, 'pending', ?, ?)")
            ->execute([$code, self::time($now), $when]);
        return true;
    }

    /**
     * Pending rows of `$codes` due by `$upTo`, oldest first.
     *
     * @param list<string> $codes
     * @return list<array{schedule_id: int, job_code: string, scheduled_at: string}>
     */
    public function due(array $codes, \DateTimeInterface $upTo): array
    {
        if ($codes === []) {
            return [];
        }
        $in = implode(',', array_fill(0, count($codes), '?'));
        $q = $this->db()->prepare(
            "SELECT schedule_id, job_code, scheduled_at FROM {$this->table}
             WHERE status = 'pending' AND scheduled_at <= ? AND job_code IN ($in)
             ORDER BY scheduled_at, schedule_id"
        );
        $q->execute([self::time($upTo), ...$codes]);
        return array_map(fn (array $r) => [
            'schedule_id' => (int) $r['schedule_id'],
            'job_code' => (string) $r['job_code'],
            'scheduled_at' => (string) $r['scheduled_at'],
        ], $q->fetchAll(\PDO::FETCH_ASSOC));
    }

    /** pending → running with executed_at, as Magento's tryLockJob: false if someone else took it. */
    public function claim(int $id, \DateTimeInterface $now, string $host, int $pid): bool
    {
        $q = $this->db()->prepare(
            "UPDATE {$this->table} SET status = 'running', executed_at = ? WHERE schedule_id = ? AND status = 'pending'"
        );
        $q->execute([self::time($now), $id]);
        if ($q->rowCount() !== 1) {
            return false;
        }
        $this->facts($id, ['host' => $host, 'pid' => $pid]);
        return true;
    }

    /**
     * A row ends: `success`, `error` or `missed`, with Magento's `messages` and Forklift's facts.
     *
     * @param array<string, scalar|null> $facts
     */
    public function finish(int $id, string $status, ?string $messages, \DateTimeInterface $now, array $facts = []): void
    {
        $q = $this->db()->prepare(
            "UPDATE {$this->table} SET status = ?, messages = ?, finished_at = ? WHERE schedule_id = ?"
        );
        $q->execute([$status, $messages, $status === self::MISSED ? null : self::time($now), $id]);
        if ($facts !== []) {
            $this->facts($id, $facts);
        }
    }

    /** @param array<string, scalar|null> $facts */
    private function facts(int $id, array $facts): void
    {
        $allowed = ['host', 'pid', 'outcome', 'exit_code', 'signal_number', 'duration', 'cpu_time', 'peak_memory', 'max_rss', 'records'];
        $facts = array_intersect_key($facts, array_flip($allowed));
        $f = $this->facts;
        $exists = $this->db()->prepare("SELECT 1 FROM $f WHERE schedule_id = ?");
        $exists->execute([$id]);
        if ($exists->fetchColumn() === false) {
            $facts += ['host' => '', 'pid' => 0];
            $cols = implode(', ', array_keys($facts));
            $marks = implode(', ', array_fill(0, count($facts), '?'));
            $this->db()->prepare("INSERT INTO $f (schedule_id, $cols) VALUES (?, $marks)")
                ->execute([$id, ...array_values($facts)]);
            return;
        }
        $set = implode(', ', array_map(fn ($c) => "$c = ?", array_keys($facts)));
        $this->db()->prepare("UPDATE $f SET $set WHERE schedule_id = ?")->execute([...array_values($facts), $id]);
    }

    /**
     * Rows left `running`, with the host and pid recorded for them.
     *
     * @return list<array{schedule_id: int, job_code: string, host: ?string, pid: ?int}>
     */
    public function running(): array
    {
        $q = $this->db()->query(
            "SELECT s.schedule_id, s.job_code, f.host, f.pid FROM {$this->table} s
             LEFT JOIN {$this->facts} f ON f.schedule_id = s.schedule_id
             WHERE s.status = 'running' ORDER BY s.schedule_id"
        );
        return array_map(fn (array $r) => [
            'schedule_id' => (int) $r['schedule_id'],
            'job_code' => (string) $r['job_code'],
            'host' => $r['host'] === null ? null : (string) $r['host'],
            'pid' => $r['pid'] === null ? null : (int) $r['pid'],
        ], $q->fetchAll(\PDO::FETCH_ASSOC));
    }

    /**
     * Deletes rows of `$codes` in `$status` scheduled before `$before` (history clean-up); how many.
     *
     * @param list<string> $codes
     */
    public function cleanup(array $codes, string $status, \DateTimeInterface $before): int
    {
        if ($codes === []) {
            return 0;
        }
        $in = implode(',', array_fill(0, count($codes), '?'));
        $where = "status = ? AND scheduled_at < ? AND job_code IN ($in)";
        $args = [$status, self::time($before), ...$codes];
        $this->db()->prepare("DELETE FROM {$this->facts} WHERE schedule_id IN (SELECT schedule_id FROM {$this->table} WHERE $where)")
            ->execute($args);
        $q = $this->db()->prepare("DELETE FROM {$this->table} WHERE $where");
        $q->execute($args);
        return $q->rowCount();
    }

    /**
     * Deletes pending rows of jobs that are no longer configured (removed or disabled); how many.
     *
     * @param list<string> $known
     */
    public function dropUnknownPending(array $known): int
    {
        $in = $known === [] ? "''" : implode(',', array_fill(0, count($known), '?'));
        $q = $this->db()->prepare("DELETE FROM {$this->table} WHERE status = 'pending' AND job_code NOT IN ($in)");
        $q->execute($known);
        return $q->rowCount();
    }

    /**
     * Rows with Forklift's facts beside them, newest first (for reports and the demo).
     *
     * @return list<array<string, mixed>>
     */
    public function history(int $limit = 100): array
    {
        $q = $this->db()->prepare(
            "SELECT s.*, f.host, f.pid, f.outcome, f.exit_code, f.signal_number, f.duration, f.cpu_time,
                    f.peak_memory, f.max_rss, f.records
             FROM {$this->table} s LEFT JOIN {$this->facts} f ON f.schedule_id = s.schedule_id
             ORDER BY s.scheduled_at DESC, s.schedule_id DESC LIMIT " . max(1, $limit)
        );
        $q->execute();
        return $q->fetchAll(\PDO::FETCH_ASSOC);
    }
}
