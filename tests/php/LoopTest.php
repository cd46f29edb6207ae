<?php

namespace Forklift\Tests;

use Forklift\Pool;
use Forklift\Tests\Support\Procfs;
use Forklift\Tests\Support\SocketPairs;
use Forklift\Tests\Support\Subprocess;
use PHPUnit\Framework\TestCase;

/**
 * One event loop per process: whichever Forklift call blocks, every deadline of every job and
 * pool task is kept; a job's own timer kills it when its parent is busy elsewhere; many jobs are
 * drained at a cost that does not grow per job; file-descriptor limits are raised or named.
 */
final class LoopTest extends TestCase
{
    use SocketPairs;
    private ?Pool $pool = null;

    protected function tearDown(): void
    {
        if ($this->pool !== null) {
            $this->pool->kill();
            $this->pool = null;
        }
        $this->closeSocketPairs();
    }

    /** Returns true once /proc/$pid is gone (the process exited and was reaped), false after $seconds. */
    private static function goneWithin(int $pid, float $seconds): bool
    {
        $deadline = hrtime(true) + (int) ($seconds * 1e9);
        while (hrtime(true) < $deadline) {
            if (!file_exists("/proc/$pid")) {
                return true;
            }
            usleep(2000);
        }
        return false;
    }

    public function test_a_pool_task_deadline_is_kept_while_the_parent_waits_on_a_plain_job(): void
    {
        [$parentEnd, $workerEnd] = $this->socketPair();
        $pool = $this->pool = new Pool(function () use ($workerEnd) {
            fwrite($workerEnd, getmypid() . "\n");
            sleep(30);
        }, workers: 1, timeout: 0.3, grace: 0.1);
        $task = $pool->submit('stuck');
        // The pool is driven by its calls: drive it (non-blocking isDone()) until the worker
        // says it has begun the task (an event on the socket, not a sleep).
        do {
            $this->assertFalse($task->isDone());
            $read = [$parentEnd];
            $none = [];
        } while (stream_select($read, $none, $none, 0, 10000) === 0);
        $workerPid = (int) fgets($parentEnd);
        $this->assertGreaterThan(0, $workerPid);

        // A plain job that watches the worker: it is gone only if the parent, blocked in
        // $job->wait(), kills it at the task's deadline and reaps it.
        $job = \Forklift\fork(fn () => self::goneWithin($workerPid, 10.0));
        $this->assertTrue($job->wait()->value(), 'the pool task was stopped while the parent waited on another job');
        $result = $task->wait();
        $this->assertSame('timeout', $result->outcome(), $result->cause());
        $this->assertLessThan(2.0, $result->duration());
    }

    public function test_a_job_deadline_is_kept_while_the_parent_waits_on_a_pool_task(): void
    {
        $job = \Forklift\fork(fn () => sleep(30), timeout: 0.3, grace: 0.1);
        $jobPid = $job->pid();
        $pool = $this->pool = new Pool(fn (int $pid) => self::goneWithin($pid, 10.0), workers: 1);
        $this->assertTrue($pool->submit($jobPid)->wait()->value(), 'the job was stopped while the parent waited on a pool task');
        $result = $job->wait();
        $this->assertSame('timeout', $result->outcome());
        $this->assertStringContainsString('stopped with SIGTERM', $result->cause());
        $this->assertLessThan(1.0, $result->duration(), 'the duration is when it ended, not when the parent looked');
    }

    public function test_a_task_that_finished_while_the_parent_waited_elsewhere_is_returned_at_once(): void
    {
        [$taskEnd, $jobEnd] = $this->socketPair();
        $pool = $this->pool = new Pool(function (int $n) use ($taskEnd) {
            fwrite($taskEnd, "ran\n");
            return $n * 3;
        }, workers: 1);
        $task = $pool->submit(14);
        // The parent waits on a plain job that ends once the task has run; meanwhile the loop
        // hands the task out and reads its result.
        \Forklift\fork(fn () => fgets($jobEnd))->wait();
        // With the result already read, Task::wait() must not block waiting for more.
        $value = \Forklift\timeout(5.0, fn () => $task->wait()->value());
        $this->assertSame(42, $value);
    }

    public function test_a_pool_that_must_fork_again_does_not_make_other_waits_spin(): void
    {
        // Workers that die at start: the pool backs off, then waits for its own next call to fork.
        $pool = $this->pool = new Pool(fn ($x) => $x, workers: 1, onWorkerStart: function () {
            throw new \RuntimeException('db down');
        });
        $cpu = function (): float {
            $u = getrusage();
            return $u['ru_utime.tv_sec'] + $u['ru_utime.tv_usec'] / 1e6 + $u['ru_stime.tv_sec'] + $u['ru_stime.tv_usec'] / 1e6;
        };
        $before = $cpu();
        \Forklift\fork(fn () => usleep(800000))->wait();
        $used = $cpu() - $before;
        // A busy loop would burn the whole 0.8 s; a wait that sleeps in the kernel uses next to none.
        $this->assertLessThan(0.3, $used, "the parent spun while it waited: {$used} s of CPU");
        $this->assertSame(0, $pool->stats()['completed']);
    }

    public function test_a_job_dies_at_its_deadline_while_the_parent_is_busy_in_php_code(): void
    {
        $started = hrtime(true);
        $job = \Forklift\fork(fn () => sleep(30), timeout: 0.2, grace: 0.1);
        $pid = $job->pid();
        // Busy in PHP code for up to 2 s, no Forklift call: watch the job through /proc.
        $diedAfter = null;
        while (hrtime(true) - $started < 2e9) {
            $stat = Procfs::stat($pid);
            if ($stat === null || $stat['state'] === 'Z') {
                $diedAfter = (hrtime(true) - $started) / 1e9;
                break;
            }
            for ($i = 0; $i < 10000; $i++) {
                // CPU work, not a Forklift call.
            }
        }
        $this->assertNotNull($diedAfter, 'the job was still alive after 2 s: nothing kept its deadline');
        // timeout + grace + the 0.25 s backstop margin = 0.55 s, with room for a loaded machine.
        $this->assertLessThan(1.5, $diedAfter);
        $result = $job->wait();
        $this->assertSame('timeout', $result->outcome(), $result->cause());
        $this->assertStringContainsString('its own timer', $result->cause());
        $this->assertLessThanOrEqual(0.56, $result->duration(), 'it ended at its backstop');
    }

    public function test_a_thousand_running_jobs_are_drained_with_wait_any(): void
    {
        $jobs = [];
        for ($i = 0; $i < 1000; $i++) {
            $jobs[$i] = \Forklift\fork(fn () => $i * 2);
        }
        $seen = 0;
        while ($jobs) {
            $k = \Forklift\wait_any($jobs);
            $this->assertSame($k * 2, $jobs[$k]->wait()->value());
            unset($jobs[$k]);
            $seen++;
        }
        $this->assertSame(1000, $seen);
        $this->assertSame([], Procfs::zombieChildren());
    }

    public function test_a_forked_helper_that_uses_forklift_never_takes_its_parents_job_results(): void
    {
        if (!function_exists('pcntl_fork')) {
            $this->markTestSkipped('pcntl is not loaded');
        }
        [$release, $jobEnd] = $this->socketPair();
        $job = \Forklift\fork(function () use ($jobEnd) {
            set_error_handler(null); // PHPUnit's handler would turn the warning into an exception
            trigger_error('before the value', E_USER_WARNING);
            return 'parent job: ' . fgets($jobEnd);
        });
        $helper = pcntl_fork();
        if ($helper === 0) {
            // The helper's own Forklift use must see its own runtime, not its parent's jobs.
            $ok = \Forklift\fork(fn () => 'helper job')->wait()->value() === 'helper job';
            posix_kill(posix_getpid(), $ok ? SIGUSR1 : SIGUSR2);
            exit(0);
        }
        pcntl_waitpid($helper, $status);
        $this->assertTrue(pcntl_wifsignaled($status));
        $this->assertSame(SIGUSR1, pcntl_wtermsig($status), 'the helper ran its own job');
        fwrite($release, "go\n");
        $result = $job->wait();
        $this->assertSame("parent job: go\n", $result->value());
        $this->assertCount(1, $result->errors(), 'its error record reached the parent, not the helper');
    }

    public function test_a_low_soft_limit_of_open_files_is_raised_to_the_hard_one(): void
    {
        $out = $this->runLimited('64:4096', <<<'PHP'
            $jobs = [];
            for ($i = 0; $i < 100; $i++) { $jobs[] = Forklift\fork(fn () => 1); }
            $sum = 0;
            foreach ($jobs as $j) { $sum += $j->wait()->value(); }
            echo json_encode(['sum' => $sum, 'soft' => (int) trim(shell_exec('ulimit -n'))]);
            PHP);
        $this->assertSame(100, $out['sum'], '100 jobs ran with a soft limit of 64 open files');
    }

    public function test_running_out_of_open_files_names_the_limit(): void
    {
        $out = $this->runLimited('64:64', <<<'PHP'
            $jobs = [];
            try {
                for ($i = 0; $i < 100; $i++) { $jobs[] = Forklift\fork(fn () => sleep(5)); }
                $line = 'no exception';
            } catch (\Throwable $e) {
                $line = get_class($e) . ': ' . $e->getMessage();
            }
            $started = count($jobs);
            foreach ($jobs as $j) { $j->signal(SIGKILL); $j->wait(); }
            echo json_encode(['line' => $line, 'started' => $started]);
            PHP);
        $this->assertStringStartsWith('Forklift\ForkException: socketpair() failed: EMFILE', $out['line']);
        $this->assertStringContainsString('limit of 64 open files (ulimit -n; hard limit 64)', $out['line']);
        $this->assertStringContainsString('raise the limit', $out['line']);
        $this->assertGreaterThan(10, $out['started'], 'jobs up to the limit ran');
    }

    /** Runs $code in a fresh PHP under `prlimit --nofile=$limits`; returns its JSON output. */
    private function runLimited(string $limits, string $code): array
    {
        if (trim((string) shell_exec('command -v prlimit')) === '') {
            $this->markTestSkipped('prlimit (util-linux) is not installed');
        }
        ['status' => $status, 'out' => $out, 'err' => $err] = Subprocess::php($code, ['prlimit', "--nofile=$limits"]);
        $this->assertSame(0, $status, "stdout: $out\nstderr: $err");
        $decoded = json_decode($out, true);
        $this->assertIsArray($decoded, "stdout: $out\nstderr: $err");
        return $decoded;
    }
}
