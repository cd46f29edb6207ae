<?php

declare(strict_types=1);

namespace Forklift\Tests\Cluster;

use Forklift\Daemon;
use Forklift\Tests\Support\CliProcess;
use Forklift\Tests\Support\DaemonKit;
use Forklift\Tests\Support\MariaDb;
use Forklift\Tests\Support\Redis;
use PHPUnit\Framework\TestCase;

use function Forklift\Tests\Support\forklift_cli;

/**
 * One dispatcher across hosts: two daemons (`bin/forklift run`, pid files of their own) share a
 * leader lock on a real MariaDB or Redis server started on loopback; only the holder runs the
 * schedule, and the other takes over when the holder is killed. Each wait is on an event: a log
 * line, the schedule's file gaining a line from the other dispatcher.
 *
 * Set FORKLIFT_REPORT_TIMINGS=1 to print the measured takeover times.
 */
final class LeaderTest extends TestCase
{
    /** How often the daemons check the lock (s). */
    private const EVERY = 0.2;
    /** The Redis lock's TTL (s). */
    private const TTL = 1.0;

    private static ?MariaDb $mariadb = null;
    private static ?Redis $redis = null;
    private string $dir;
    /** @var list<CliProcess> */
    private array $started = [];

    public static function tearDownAfterClass(): void
    {
        self::$mariadb?->stop();
        self::$mariadb = null;
        self::$redis?->stop();
        self::$redis = null;
    }

    protected function setUp(): void
    {
        $this->dir = DaemonKit::tempDir();
    }

    protected function tearDown(): void
    {
        foreach ($this->started as $p) {
            if ($p->exit === null) {
                $p->kill(SIGKILL);
                $p->wait(5);
            }
        }
        DaemonKit::removeDir($this->dir);
    }

    private static function mariadb(): MariaDb
    {
        if (self::$mariadb === null) {
            self::$mariadb = new MariaDb();
        } else {
            self::$mariadb->recreate();
        }
        return self::$mariadb;
    }

    private static function redis(): Redis
    {
        if (self::$redis === null) {
            self::$redis = new Redis();
        } else {
            self::$redis->client()->flushAll();
        }
        return self::$redis;
    }

    private function mariaDbLock(): string
    {
        $dsn = self::mariadb()->dsn();
        return "Forklift\\Cluster\\MariaDbLock::connect('lead', '$dsn', 'root', '', timeout: 5)";
    }

    private function redisLock(): string
    {
        $port = self::redis()->port;
        return "Forklift\\Cluster\\RedisLock::connect('lead', '127.0.0.1', $port, ttl: " . self::TTL . ')';
    }

    /**
     * APP.php of daemon `$name`: the lock made by `$lock` (PHP code), checked every EVERY s, and
     * a forked `every` job (the schedule) that appends its dispatcher's pid to `schedule`.
     */
    private function app(string $name, string $lock, string $more = ''): string
    {
        $file = "$this->dir/$name.php";
        $autoload = dirname(__DIR__, 3) . '/php/autoload.php';
        $every = self::EVERY;
        file_put_contents($file, <<<PHP
        <?php
        require '$autoload';
        \$d = new Forklift\\Daemon('$name', pidFile: '$this->dir/$name.pid', stopTimeout: 2);
        \$dir = '$this->dir';
        \$lock = $lock;
        \$d->leader(\$lock, every: $every);
        \$d->every(0.1, fn () => file_put_contents("\$dir/schedule", posix_getppid() . "\\n", FILE_APPEND | LOCK_EX),
            name: 'tick', fork: true);
        $more
        return \$d;
        PHP);
        return $file;
    }

    /** Starts `bin/forklift run APP`; returns [process, dispatcher pid] once it runs. */
    private function start(string $app): array
    {
        $p = new CliProcess(['run', $app]);
        $this->started[] = $p;
        $m = $p->waitFor('/dispatcher pid (\d+) is running/');
        $this->assertNotNull($m, "the daemon did not come up:\n" . $p->log);
        return [$p, (int) $m[1]];
    }

    private function status(string $name): array
    {
        return json_decode(Daemon::query("$this->dir/$name.pid", 'status'), true, 512, JSON_THROW_ON_ERROR);
    }

    /** The dispatcher pids the schedule ran under, in order. */
    private function schedule(): array
    {
        $text = (string) @file_get_contents("$this->dir/schedule");
        return array_map('intval', array_filter(explode("\n", $text)));
    }

    /**
     * Waits (bounded) until the schedule has a line from `$pid` after its first `$after` lines;
     * when it came, or null.
     */
    private function waitForRunOf(int $pid, float $timeout, int $after = 0): ?float
    {
        $deadline = microtime(true) + $timeout;
        do {
            if (in_array($pid, array_slice($this->schedule(), $after), true)) {
                return microtime(true);
            }
            usleep(5000);
        } while (microtime(true) < $deadline);
        return null;
    }

    private static function report(string $what, float $seconds): void
    {
        if (getenv('FORKLIFT_REPORT_TIMINGS')) {
            fwrite(STDERR, sprintf("\n%s: %.3f s\n", $what, $seconds));
        }
    }

    /**
     * Two daemons on one lock: the first leads and alone runs the schedule, the second stands by
     * (both say so in status); after `kill -9` of the leader's supervisor and dispatcher the
     * standby takes over within `$bound` seconds.
     */
    private function onlyOneLeadsAndTheStandbyTakesOver(string $lock, float $bound, string $what): void
    {
        $host = gethostname();
        [$a, $leader] = $this->start($this->app('lead-a', $lock));
        $this->assertMatchesRegularExpression("/leader: took the lock \\($host:$leader\\)/", $a->log);
        [$b, $standby] = $this->start($this->app('lead-b', $lock));
        $this->assertMatchesRegularExpression("/standby: lock held by $host:$leader; the schedule runs there/", $b->log);
        // The schedule runs, on the leader only: 10 ticks, every one of them from its dispatcher.
        $deadline = microtime(true) + 10;
        while (count($this->schedule()) < 10 && microtime(true) < $deadline) {
            usleep(10000);
        }
        $this->assertGreaterThanOrEqual(10, count($this->schedule()));
        $this->assertSame([$leader], array_values(array_unique($this->schedule())));
        // Status shows the holder on both.
        $sa = $this->status('lead-a')['leader'];
        $sb = $this->status('lead-b')['leader'];
        $this->assertSame(['leader', "$host:$leader"], [$sa['state'], $sa['holder']]);
        $this->assertSame(['standby', "$host:$leader"], [$sb['state'], $sb['holder']]);
        $this->assertNull($this->status('lead-b')['jobs'][0]['next_run'], 'the tick is the leader\'s');
        $text = forklift_cli(['status', "--pid-file=$this->dir/lead-b.pid"]);
        $this->assertMatchesRegularExpression("/\\nstandby since \\d\\d:\\d\\d:\\d\\d \\(the schedule runs on the holder\\), lock held by $host:$leader\\n/", $text['out']);
        $metrics = Daemon::query("$this->dir/lead-a.pid", 'metrics');
        $this->assertStringContainsString('forklift_leader{daemon="lead-a"} 1', $metrics);
        $this->assertStringContainsString('forklift_leader{daemon="lead-b"} 0', Daemon::query("$this->dir/lead-b.pid", 'metrics'));

        // kill -9 of the leader's dispatcher and supervisor: its lock goes with it. The
        // dispatcher first: one that outlived its supervisor a moment would see the link close
        // and release the lock cleanly, which is not what is measured here.
        $killed = microtime(true);
        posix_kill($leader, SIGKILL);
        posix_kill($a->pid(), SIGKILL);
        $took = $b->waitFor('/leader: took the lock/', 30);
        $tookAt = microtime(true);
        $this->assertNotNull($took, "the standby did not take over:\n" . $b->log);
        $ran = $this->waitForRunOf($standby, 10);
        $this->assertNotNull($ran, 'the new leader does not run the schedule');
        self::report("$what: kill -9 → standby took the lock", $tookAt - $killed);
        self::report("$what: kill -9 → first scheduled run on the standby", $ran - $killed);
        $this->assertLessThan($bound, $ran - $killed, "takeover took longer than the bound\n" . $b->log);
        $this->assertSame('leader', $this->status('lead-b')['leader']['state']);
        $this->assertSame("$host:$standby", $this->status('lead-b')['leader']['holder']);
        $this->assertTrue(DaemonKit::waitGone([$a->pid(), $leader], 10));
        // After the takeover the schedule is the standby's alone.
        $runs = $this->schedule();
        $firstOfB = array_search($standby, $runs, true);
        $this->assertNotContains($leader, array_slice($runs, $firstOfB));
    }

    public function test_on_mariadb_only_the_holder_runs_the_schedule_and_a_standby_takes_over_after_kill_9(): void
    {
        // The server drops a killed holder's connection at once (loopback): a check, a tick.
        $this->onlyOneLeadsAndTheStandbyTakesOver($this->mariaDbLock(), self::EVERY + 0.1 + 1.0, 'MariaDB');
    }

    public function test_on_redis_only_the_holder_runs_the_schedule_and_a_standby_takes_over_after_the_ttl(): void
    {
        // A killed holder's key expires after the TTL; then a check, a tick.
        $this->onlyOneLeadsAndTheStandbyTakesOver($this->redisLock(), self::TTL + self::EVERY + 0.1 + 1.0, 'Redis');
    }

    public function test_a_child_s_exit_does_not_release_the_dispatcher_s_get_lock(): void
    {
        // Each tick's child ends with _exit (no COM_QUIT); some call the lock, which opens a
        // connection of their own and leaves the inherited one alone.
        $db = self::mariadb()->pdo('forklift_test');
        [$p, $dispatcher] = $this->start($this->app('lead-a', $this->mariaDbLock(), <<<'PHP'
        $d->every(0.05, fn () => file_put_contents("$dir/children", var_export($lock->held(), true) . "\n", FILE_APPEND | LOCK_EX),
            name: 'child asks', fork: true);
        PHP));
        $holder = fn () => $db->query("SELECT IS_USED_LOCK('lead') AS c, (SELECT connection_id FROM forklift_leader WHERE name = 'lead') AS r")
            ->fetch(\PDO::FETCH_ASSOC);
        $before = $holder();
        $this->assertNotNull($before['c']);
        $this->assertSame((string) $before['c'], (string) $before['r'], 'the row names the holding connection');
        $deadline = microtime(true) + 20;
        while (substr_count((string) @file_get_contents("$this->dir/children"), "\n") < 30 && microtime(true) < $deadline) {
            usleep(10000);
        }
        $answers = array_filter(explode("\n", (string) file_get_contents("$this->dir/children")));
        $this->assertGreaterThanOrEqual(30, count($answers));
        $this->assertSame(['false'], array_values(array_unique($answers)), 'a child does not hold its parent\'s lock');
        $this->assertGreaterThanOrEqual(10, count($this->schedule()));
        $this->assertEquals($before, $holder(), 'the dispatcher\'s connection still holds the lock');
        $this->assertSame('leader', $this->status('lead-a')['leader']['state']);
        // The stop releases it.
        $stop = forklift_cli(['stop', "--pid-file=$this->dir/lead-a.pid", '--timeout=20']);
        $this->assertSame(0, $stop['status'], $stop['err']);
        $this->assertNull($holder()['c']);
        $this->assertSame(0, $p->wait(5));
        $this->assertStringNotContainsString('lost the lock', $p->log);
        $this->assertStringContainsString('leader: released the lock (stopping)', $p->log);
    }

    public function test_a_reload_hands_the_lock_to_the_new_dispatcher_at_once(): void
    {
        $host = preg_quote(gethostname(), '/');
        [$p, $old] = $this->start($this->app('lead-a', $this->mariaDbLock()));
        $this->assertNotNull($this->waitForRunOf($old, 10));
        $reload = forklift_cli(['reload', "--pid-file=$this->dir/lead-a.pid", '--timeout=20']);
        $this->assertSame(0, $reload['status'], $reload['err'] . $p->log);
        // The old dispatcher lets go before it answers the handover; the new one takes it at its start.
        $m = $p->waitFor("/leader: took the lock \\($host:(\\d+)\\)/");
        $this->assertNotNull($m, $p->log);
        $new = (int) $m[1];
        $this->assertNotSame($old, $new);
        $this->assertStringContainsString('leader: released the lock (reload: handed over to the new dispatcher)', $p->log);
        $this->assertNotNull($this->waitForRunOf($new, 10));
        $this->assertSame('leader', $this->status('lead-a')['leader']['state']);
    }

    public function test_lock_connections_the_server_killed_are_opened_again_without_a_second_leader(): void
    {
        $db = self::mariadb()->pdo('forklift_test');
        [$a, $pa] = $this->start($this->app('lead-a', $this->mariaDbLock()));
        [$b, $pb] = $this->start($this->app('lead-b', $this->mariaDbLock()));
        $conn = fn () => (int) $db->query("SELECT IS_USED_LOCK('lead')")->fetchColumn();
        $first = $conn();
        // The server ends every connection but the test's (a failover, a DBA's KILL).
        foreach ($db->query('SELECT id FROM information_schema.PROCESSLIST WHERE id <> CONNECTION_ID()')->fetchAll(\PDO::FETCH_COLUMN) as $id) {
            try {
                $db->exec("KILL $id");
            } catch (\PDOException) {
                // a system thread, or gone already
            }
        }
        // A check opens a connection and takes the lock again: the leader's at once (held()
        // reconnects), the standby's after its dead connection failed once.
        $deadline = microtime(true) + 10;
        while (($now = $conn()) === 0 || $now === $first) {
            $this->assertLessThan($deadline, microtime(true), 'nobody took the lock again');
            usleep(10000);
        }
        $before = count($this->schedule());
        $deadline = microtime(true) + 10;
        while (count($this->schedule()) < $before + 10 && microtime(true) < $deadline) {
            usleep(10000);
        }
        $states = [$this->status('lead-a')['leader']['state'], $this->status('lead-b')['leader']['state']];
        sort($states);
        $this->assertSame(['leader', 'standby'], $states);
        [$leader, $standby, $other] = $this->status('lead-a')['leader']['state'] === 'leader' ? [$pa, $pb, $b] : [$pb, $pa, $a];
        $this->assertSame(gethostname() . ":$leader", $this->status('lead-b')['leader']['holder']);
        // Never two leaders: the schedule's pid changes at most once, to the leader's.
        $runs = $this->schedule();
        $changes = count(array_filter(array_keys($runs), fn ($k) => $k > 0 && $runs[$k] !== $runs[$k - 1]));
        $this->assertLessThanOrEqual(1, $changes, implode(',', $runs));
        $this->assertSame($leader, end($runs));
        // The standby's connection works again too: it takes over when the leader dies.
        $victim = $leader === $pa ? $a : $b;
        $seen = count($this->schedule());
        posix_kill($leader, SIGKILL);
        posix_kill($victim->pid(), SIGKILL);
        $this->assertNotNull($other->waitFor('/leader: took the lock/', 10), $other->log);
        $this->assertNotNull($this->waitForRunOf($standby, 10, $seen));
    }

    public function test_a_lock_that_throws_leaves_the_daemon_standing_by_and_says_so_once(): void
    {
        $lock = <<<'PHP'
        new class implements Forklift\Cluster\Lock {
            public function acquire(): bool { throw new RuntimeException('the lock server is down'); }
            public function held(): bool { return true; }
            public function release(): void {}
            public function holder(): ?string { return null; }
        }
        PHP;
        // A poll that reaches every host goes on in standby (a queue consumer's, say).
        [$p] = $this->start($this->app('lead-a', $lock, <<<'PHP'
        $d->every(0.05, fn () => file_put_contents("$dir/polls", "poll\n", FILE_APPEND), name: 'poll', everyHost: true);
        PHP));
        // 20 polls: 1 s, about 5 checks of the lock.
        $deadline = microtime(true) + 10;
        while (substr_count((string) @file_get_contents("$this->dir/polls"), "\n") < 20 && microtime(true) < $deadline) {
            usleep(10000);
        }
        $this->assertGreaterThanOrEqual(20, substr_count((string) @file_get_contents("$this->dir/polls"), "\n"));
        $this->assertSame([], $this->schedule(), 'no leader, no schedule');
        $p->waitFor('/(?!)/', 0.2); // reads what it logged so far
        $s = $this->status('lead-a')['leader'];
        $this->assertSame(['standby', null], [$s['state'], $s['holder']]);
        $this->assertSame(1, preg_match_all('/leader lock: acquire\(\) threw RuntimeException: the lock server is down/', $p->log), $p->log);
        $this->assertStringContainsString('taken as not held', $p->log);
        $this->assertStringNotContainsString('took the lock', $p->log);
    }
}
