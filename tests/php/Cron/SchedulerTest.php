<?php

declare(strict_types=1);

namespace Forklift\Tests\Cron;

use Forklift\Cron\Group;
use Forklift\Cron\Job;
use Forklift\Cron\Scheduler;
use Forklift\Cron\Store;
use Forklift\Daemon;
use Forklift\Tests\Support\DaemonKit;
use Forklift\Tests\Support\MemoryLogger;
use PHPUnit\Framework\TestCase;

/**
 * Magento's cron_schedule run by a real daemon (in this process) on SQLite, with a clock the test
 * sets: generation ahead, runs with their truth on the row, missed rows, orphans, clean-up.
 */
class SchedulerTest extends TestCase
{
    protected string $dir;
    protected \PDO $db;
    protected Store $store;
    private \DateTimeImmutable $now;
    private MemoryLogger $log;

    protected function setUp(): void
    {
        $this->dir = DaemonKit::tempDir();
        [$this->store, $this->db] = $this->makeStore();
        $this->now = new \DateTimeImmutable('2026-03-02 10:00:30', new \DateTimeZone('UTC'));
        $this->log = new MemoryLogger();
    }

    /**
     * The store under test and a connection of the test's own to look at its tables.
     *
     * @return array{0: Store, 1: \PDO}
     */
    protected function makeStore(): array
    {
        return [Store::sqlite("$this->dir/cron.sqlite"), new \PDO("sqlite:$this->dir/cron.sqlite")];
    }

    /** PHP code that makes the same store in a daemon's APP.php. */
    protected function storeCode(): string
    {
        return "Forklift\\Cron\\Store::sqlite('$this->dir/cron.sqlite')";
    }

    protected function tearDown(): void
    {
        DaemonKit::removeDir($this->dir);
    }

    /** @param list<Job> $jobs */
    private function scheduler(Daemon $d, array $jobs, array $groups = []): Scheduler
    {
        return new Scheduler(
            $d,
            $this->store,
            $groups ?: [Group::magentoDefault(), Group::magentoIndex()],
            $jobs,
            zone: new \DateTimeZone('UTC'),
            clock: fn () => $this->now,
            tick: 0.005,
            host: 'test-host',
        );
    }

    private function daemon(): Daemon
    {
        return new Daemon('cron', pidFile: "$this->dir/cron.pid", logger: $this->log, stopTimeout: 5);
    }

    /** Runs the daemon until `$done()` (checked every 5 ms), at most 20 s. */
    private function runUntil(Daemon $d, callable $done): void
    {
        $deadline = microtime(true) + 20;
        $d->every(0.005, function () use ($d, $done, $deadline) {
            if ($done() || microtime(true) > $deadline) {
                $d->stop();
            }
        }, name: 'test-watch');
        $this->assertSame(0, $d->run());
    }

    /** @return list<array<string, mixed>> */
    private function rows(string $where = '1=1'): array
    {
        return $this->db->query("SELECT s.*, f.host, f.pid, f.outcome, f.records, f.duration FROM cron_schedule s
            LEFT JOIN forklift_cron_run f ON f.schedule_id = s.schedule_id WHERE $where ORDER BY s.scheduled_at, s.schedule_id")
            ->fetchAll(\PDO::FETCH_ASSOC);
    }

    private function rowCount(string $where): int
    {
        return (int) $this->db->query("SELECT COUNT(*) FROM cron_schedule WHERE $where")->fetchColumn();
    }

    public function test_rows_are_generated_ahead_and_a_due_row_runs_with_its_truth_on_the_row(): void
    {
        $d = $this->daemon();
        $this->scheduler($d, [new Job('sales_clean_quotes', 'default', '*/5 * * * *', fn () => 'cleaned')]);
        $this->runUntil($d, fn () => $this->rowCount("status = 'success'") === 1);
        $rows = $this->rows();
        // 10:00 (due now) and 10:05 ... 10:20: schedule_ahead_for 20 minutes.
        $this->assertSame(
            ['2026-03-02 10:00:00', '2026-03-02 10:05:00', '2026-03-02 10:10:00', '2026-03-02 10:15:00', '2026-03-02 10:20:00'],
            array_column($rows, 'scheduled_at')
        );
        $this->assertSame(['success', 'pending', 'pending', 'pending', 'pending'], array_column($rows, 'status'));
        $ran = $rows[0];
        $this->assertSame('2026-03-02 10:00:30', $ran['executed_at']);
        $this->assertSame('2026-03-02 10:00:30', $ran['finished_at']);
        $this->assertSame('test-host', $ran['host']);
        $this->assertNotSame(getmypid(), (int) $ran['pid'], 'the pid of the job child');
        $this->assertGreaterThan(0, (int) $ran['pid']);
        $this->assertSame('ok', $ran['outcome']);
        $this->assertNull($ran['messages']);
    }

    public function test_a_failing_job_s_row_says_why_in_magento_s_messages_and_forklift_s_facts(): void
    {
        $d = $this->daemon();
        $this->scheduler($d, [
            new Job('throws', 'default', '* * * * *', function () {
                throw new \RuntimeException('payment gateway said no');
            }),
            new Job('fatal', 'index', '* * * * *', function () {
                set_error_handler(null);
                trigger_error('stock is negative', E_USER_WARNING);
                ini_set('memory_limit', '16M');
                $x = str_repeat('x', 64 << 20);
            }),
        ]);
        $this->runUntil($d, fn () => $this->rowCount("status = 'error'") === 2);
        $rows = [];
        foreach ($this->rows("status = 'error'") as $r) {
            $rows[$r['job_code']] = $r;
        }
        $this->assertStringContainsString('uncaught RuntimeException: payment gateway said no', $rows['throws']['messages']);
        $this->assertSame('exception', $rows['throws']['outcome']);
        $this->assertSame('oom', $rows['fatal']['outcome']);
        $this->assertStringContainsString('Allowed memory size', $rows['fatal']['messages']);
        $this->assertStringContainsString('stock is negative', $rows['fatal']['messages']);
        $records = json_decode($rows['fatal']['records'], true);
        $this->assertSame('stock is negative', $records[0]['message']);
        $this->assertNotNull($rows['fatal']['finished_at']);
    }

    public function test_a_row_later_than_its_lifetime_is_missed_and_old_history_is_cleaned_up(): void
    {
        $this->store->install();
        $insert = $this->db->prepare("INSERT INTO cron_schedule (job_code, status, scheduled_at, created_at) VALUES (?, ?, ?, '2026-03-01 00:00:00')");
        $insert->execute(['late', 'pending', '2026-03-02 09:40:00']);   // 20 min late > lifetime 15
        $insert->execute(['late', 'success', '2026-03-02 08:00:00']);   // older than 60 min: deleted
        $insert->execute(['late', 'success', '2026-03-02 09:30:00']);   // 30 min: kept
        $insert->execute(['late', 'error', '2026-03-01 20:00:00']);     // 14 h > 600 min: deleted
        $insert->execute(['late', 'error', '2026-03-02 02:00:00']);     // 8 h: kept
        $insert->execute(['gone_job', 'pending', '2026-03-02 11:00:00']); // job no longer configured
        $d = $this->daemon();
        $this->scheduler($d, [new Job('late', 'default', '0 0 1 1 *', fn () => null)]);
        $this->runUntil($d, fn () => $this->rowCount("status = 'missed'") === 1 && $this->rowCount("job_code = 'gone_job'") === 0);
        $missed = $this->rows("status = 'missed'")[0];
        $this->assertSame('2026-03-02 09:40:00', $missed['scheduled_at']);
        $this->assertStringContainsString('Cron Job late is missed at 2026-03-02 10:00:30', $missed['messages']);
        $this->assertSame(
            ['2026-03-02 02:00:00', '2026-03-02 09:30:00', '2026-03-02 09:40:00'],
            array_column($this->rows("job_code = 'late'"), 'scheduled_at')
        );
    }

    public function test_a_row_left_running_by_a_dead_process_becomes_an_orphaned_error(): void
    {
        $this->store->install();
        $this->db->exec("INSERT INTO cron_schedule (job_code, status, scheduled_at, executed_at) VALUES ('indexer', 'running', '2026-03-02 09:55:00', '2026-03-02 09:55:01')");
        $id = (int) $this->db->lastInsertId();
        $this->db->exec("INSERT INTO forklift_cron_run (schedule_id, host, pid) VALUES ($id, 'test-host', 999999999)");
        $this->db->exec("INSERT INTO cron_schedule (job_code, status, scheduled_at) VALUES ('indexer', 'running', '2026-03-02 09:56:00')");
        $other = (int) $this->db->lastInsertId();
        $this->db->exec("INSERT INTO forklift_cron_run (schedule_id, host, pid) VALUES ($other, 'other-host', 1234)");
        $d = $this->daemon();
        $this->scheduler($d, [new Job('indexer', 'default', '0 0 1 1 *', fn () => null)]);
        $this->runUntil($d, fn () => $this->rowCount("status = 'error'") === 1);
        $row = $this->rows("s.schedule_id = $id")[0];
        $this->assertSame('error', $row['status']);
        $this->assertSame('orphaned: pid 999999999 on host test-host is gone (its dispatcher ended while it ran)', $row['messages']);
        $this->assertSame('running', $this->rows("s.schedule_id = $other")[0]['status'], "another host's row is its own");
    }

    public function test_a_job_still_running_is_not_started_again_and_its_row_says_so(): void
    {
        $gate = "$this->dir/gate";
        $d = $this->daemon();
        $this->scheduler($d, [new Job('slow', 'default', '* * * * *', function () use ($gate) {
            while (!file_exists($gate)) {
                usleep(2000);
            }
        })]);
        $moved = false;
        $this->runUntil($d, function () use (&$moved, $gate) {
            if (!$moved && $this->rowCount("status = 'running'") === 1 && $this->rows("status = 'running'")[0]['pid'] !== null
                && (int) $this->rows("status = 'running'")[0]['pid'] !== getmypid()) {
                // A minute later the next row is due while the first run still runs.
                $this->now = $this->now->modify('+1 minute');
                $moved = true;
            }
            if ($moved && $this->rowCount("status = 'missed'") === 1) {
                touch($gate);
            }
            return $this->rowCount("status = 'success'") === 1 && $this->rowCount("status = 'missed'") === 1;
        });
        $missed = $this->rows("status = 'missed'")[0];
        $this->assertSame('2026-03-02 10:01:00', $missed['scheduled_at']);
        $this->assertStringContainsString('the previous run of slow was still running', $missed['messages']);
    }

    public function test_groups_are_lanes_and_separate_process_groups_run_in_parallel(): void
    {
        $barrier = "$this->dir/barrier";
        mkdir($barrier);
        $wait = function () use ($barrier) {
            touch("$barrier/" . getmypid());
            $deadline = microtime(true) + 5;
            while (count(scandir($barrier)) - 2 < 2 && microtime(true) < $deadline) {
                usleep(2000);
            }
            return count(scandir($barrier)) - 2;
        };
        $d = $this->daemon();
        $this->scheduler($d, [
            new Job('index_a', 'index', '* * * * *', $wait),
            new Job('index_b', 'index', '* * * * *', $wait),
        ]);
        $this->runUntil($d, fn () => $this->rowCount("status IN ('success', 'error')") === 2);
        $this->assertSame(['success', 'success'], array_column($this->rows("status != 'pending'"), 'status'), 'both met at the barrier');
    }

    public function test_a_job_killed_with_sigkill_ends_its_row_as_an_error_with_the_cause_not_stuck_running(): void
    {
        $d = $this->daemon();
        $this->scheduler($d, [new Job('victim', 'default', '* * * * *', function () {
            file_put_contents(getenv('VICTIM_FILE') ?: '/dev/null', (string) getmypid());
            sleep(60);
        })]);
        putenv("VICTIM_FILE=$this->dir/victim");
        $killed = false;
        $this->runUntil($d, function () use (&$killed) {
            if (!$killed && is_file("$this->dir/victim") && ($pid = (int) file_get_contents("$this->dir/victim")) > 0) {
                posix_kill($pid, SIGKILL);
                $killed = true;
            }
            return $this->rowCount("status = 'error'") === 1;
        });
        putenv('VICTIM_FILE');
        $row = $this->rows("status = 'error'")[0];
        $this->assertSame('signal', $row['outcome']);
        $this->assertStringContainsString('SIGKILL', $row['messages']);
        $this->assertNotNull($row['finished_at']);
    }

    public function test_rows_of_a_dispatcher_killed_mid_run_are_reconciled_after_the_restart(): void
    {
        $store = $this->storeCode();
        $app = "$this->dir/app.php";
        $autoload = dirname(__DIR__, 3) . '/php/autoload.php';
        file_put_contents($app, <<<PHP
        <?php
        require '$autoload';
        \$d = new Forklift\\Daemon('cronsup', pidFile: '$this->dir/cronsup.pid', restartDelay: 0.05, stopTimeout: 0.5);
        new Forklift\\Cron\\Scheduler(\$d, $store, [Forklift\\Cron\\Group::magentoDefault()], [
            new Forklift\\Cron\\Job('long_import', 'default', '* * * * *', function () { sleep(60); }),
        ], tick: 0.05, host: 'test-host');
        return \$d;
        PHP);
        $p = new \Forklift\Tests\Support\CliProcess(['run', $app]);
        $this->assertNotNull($m = $p->waitFor('/dispatcher pid (\d+) is running/'), $p->log);
        $dispatcher = (int) $m[1];
        $deadline = microtime(true) + 10;
        while ($this->rowCount("status = 'running'") === 0 && microtime(true) < $deadline) {
            usleep(5000);
        }
        $row = $this->rows("status = 'running'")[0];
        posix_kill($dispatcher, SIGKILL);
        $this->assertNotNull($p->waitFor('/dispatcher started again/'), $p->log);
        $deadline = microtime(true) + 10;
        while ($this->rowCount("status = 'error'") === 0 && microtime(true) < $deadline) {
            usleep(5000);
        }
        $after = $this->rows("s.schedule_id = {$row['schedule_id']}")[0];
        $this->assertSame('error', $after['status'], $p->log);
        $this->assertMatchesRegularExpression('/^orphaned: pid \d+ on host test-host is gone/', $after['messages']);
        $p->kill(SIGTERM);
        $this->assertSame(0, $p->wait(20), $p->log);
    }

    public function test_the_dispatcher_s_connection_outlives_children_that_exit_and_crash(): void
    {
        $d = $this->daemon();
        $this->scheduler($d, [
            new Job('exits', 'index', '* * * * *', fn () => exit(3)),
            new Job('segfaults', 'index', '* * * * *', fn () => posix_kill(getmypid(), SIGSEGV)),
            new Job('fine', 'default', '* * * * *', fn () => 'ok'),
        ]);
        $this->runUntil($d, fn () => $this->rowCount("status IN ('success', 'error')") === 3);
        $rows = [];
        foreach ($this->rows("status != 'pending'") as $r) {
            $rows[$r['job_code']] = [$r['status'], $r['outcome']];
        }
        ksort($rows);
        $this->assertSame([
            'exits' => ['error', 'exit'],
            'fine' => ['success', 'ok'],
            'segfaults' => ['error', 'signal'],
        ], $rows);
    }

    public function test_a_row_whose_run_was_queued_but_not_started_at_the_stop_stays_pending(): void
    {
        $gate = "$this->dir/gate";
        $d = $this->daemon();
        $this->scheduler($d, [
            new Job('first', 'default', '* * * * *', function () use ($gate) {
                while (!file_exists($gate)) {
                    usleep(2000);
                }
            }),
            new Job('second', 'default', '* * * * *', fn () => 'never started'),
        ]);
        $this->runUntil($d, function () use ($gate, $d) {
            // "first" runs (its row taken), "second" waits behind it in the lane. Stop now.
            $lane = array_values(array_filter($d->status()['lanes'], fn ($l) => $l['name'] === 'default'))[0];
            if ($this->rowCount("status = 'running'") === 1 && $lane['queued'] === 1) {
                touch($gate);
                return true;
            }
            return false;
        });
        $rows = [];
        foreach ($this->rows("scheduled_at = '2026-03-02 10:00:00'") as $r) {
            $rows[$r['job_code']] = [$r['status'], $r['executed_at'], $r['host']];
        }
        $this->assertSame('success', $rows['first'][0]);
        $this->assertSame(['pending', null, null], $rows['second'], 'handed back, not left running');
    }

    public function test_lenient_mode_names_the_bad_jobs_and_runs_the_good_ones(): void
    {
        $d = $this->daemon();
        $scheduler = new Scheduler(
            $d,
            $this->store,
            [Group::magentoDefault()],
            [
                new Job('bad_group', 'nope', '* * * * *', fn () => null),
                new Job('bad_expr', 'default', '*/0 * * * *', fn () => null),
                new Job('good', 'default', '* * * * *', fn () => 'ran'),
            ],
            zone: new \DateTimeZone('UTC'),
            clock: fn () => $this->now,
            tick: 0.005,
            host: 'test-host',
            strict: false,
        );
        $errors = $scheduler->errors();
        $this->assertCount(2, $errors);
        $this->assertStringContainsString('cron job bad_group: unknown group "nope"', $errors[0]);
        $this->assertStringContainsString('cron job bad_expr:', $errors[1]);
        $this->runUntil($d, fn () => $this->rowCount("status = 'success'") === 1);
        $this->assertSame(['good'], array_values(array_unique(array_column($this->rows(), 'job_code'))));
    }

    public function test_an_unreachable_database_is_said_at_start(): void
    {
        $store = new Store(fn () => new \PDO('mysql:host=127.0.0.1;port=1;dbname=x', 'u', 'p', [\PDO::ATTR_TIMEOUT => 2]));
        $this->expectException(\RuntimeException::class);
        $this->expectExceptionMessage('cannot reach the cron_schedule database');
        new Scheduler($this->daemon(), $store, [Group::magentoDefault()], []);
    }

    public function test_bad_configuration_is_refused_with_the_job_and_what_to_fix(): void
    {
        foreach ([
            [fn () => new Job('x', 'nope', '* * * * *', fn () => null), 'unknown group "nope"'],
            [fn () => new Job('x', 'default', '61 * * * *', fn () => null), 'cron job x:'],
            [fn () => new Job('x', 'default', '', fn () => null), 'has no schedule'],
        ] as [$job, $message]) {
            try {
                $this->scheduler($this->daemon(), [$job()]);
                $this->fail("accepted: $message");
            } catch (\InvalidArgumentException $e) {
                $this->assertStringContainsString($message, $e->getMessage());
            }
        }
    }
}
