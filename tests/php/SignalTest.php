<?php

namespace Forklift\Tests;

use Forklift\Pool;
use Forklift\TimeoutException;
use Forklift\Tests\Support\Procfs;
use Forklift\Tests\Support\SocketPairs;
use Forklift\Tests\Support\Subprocess;
use PHPUnit\Framework\TestCase;

/**
 * PHP code that runs while Forklift blocks: pcntl signal handlers and an enclosing timeout() run
 * promptly, between turns of the loop; what they throw (or an exit()) reaches the caller; the jobs
 * waited for are untouched and a later wait() returns their results.
 */
final class SignalTest extends TestCase
{
    use SocketPairs;

    protected function setUp(): void
    {
        if (!function_exists('pcntl_async_signals')) {
            $this->markTestSkipped('pcntl is not loaded');
        }
        pcntl_async_signals(true);
    }

    protected function tearDown(): void
    {
        pcntl_signal(SIGUSR1, SIG_DFL);
        pcntl_async_signals(false);
        $this->closeSocketPairs();
    }

    /**
     * A job that signals this process once it blocks in Forklift's wait (its kernel wait channel
     * says so: an event in /proc, not a sleep), then ends.
     */
    private function signalMe(int $signo): \Forklift\Process
    {
        return \Forklift\fork(function () use ($signo) {
            $parent = posix_getppid();
            $deadline = hrtime(true) + 10e9;
            while (@file_get_contents("/proc/$parent/wchan") !== 'do_epoll_wait' && hrtime(true) < $deadline) {
                usleep(1000);
            }
            return posix_kill($parent, $signo);
        });
    }

    public function test_a_handler_that_throws_while_wait_blocks_reaches_the_caller_and_the_job_is_kept(): void
    {
        [$release, $jobEnd] = $this->socketPair();
        pcntl_signal(SIGUSR1, function () {
            throw new \DomainException('stop waiting');
        });
        $slow = \Forklift\fork(fn () => 'slow ' . trim(fgets($jobEnd)));
        $kicker = $this->signalMe(SIGUSR1);
        try {
            $slow->wait();
            $this->fail('the handler\'s exception did not reach the caller');
        } catch (\DomainException $e) {
            $this->assertSame('stop waiting', $e->getMessage());
        }
        $this->assertTrue($slow->isRunning(), 'the job is untouched');
        fwrite($release, "done\n");
        $this->assertSame('slow done', $slow->wait()->value());
        $this->assertTrue($kicker->wait()->value());
    }

    public function test_a_handler_that_returns_runs_at_once_and_the_wait_goes_on(): void
    {
        [$release, $jobEnd] = $this->socketPair();
        $ran = 0;
        pcntl_signal(SIGUSR1, function () use (&$ran, $release) {
            $ran++;
            // The handler runs while wait() blocks: it releases the job the wait is for.
            fwrite($release, "by the handler\n");
        });
        $slow = \Forklift\fork(fn () => trim(fgets($jobEnd)));
        $this->signalMe(SIGUSR1);
        $this->assertSame('by the handler', $slow->wait()->value());
        $this->assertSame(1, $ran);
    }

    public function test_an_enclosing_timeout_cuts_a_wait_short_and_a_later_wait_returns_the_result(): void
    {
        [$release, $jobEnd] = $this->socketPair();
        $slow = \Forklift\fork(fn () => 'late ' . trim(fgets($jobEnd)));
        $started = hrtime(true);
        try {
            \Forklift\timeout(0.2, fn () => $slow->wait());
            $this->fail('no TimeoutException');
        } catch (TimeoutException $e) {
            $this->assertStringContainsString('deadline of 0.2 s', $e->getMessage());
        }
        $this->assertLessThan(2.0, (hrtime(true) - $started) / 1e9);
        fwrite($release, "but fine\n");
        $this->assertSame('late but fine', $slow->wait()->value());
    }

    public function test_an_enclosing_timeout_cuts_wait_any_and_a_pool_drain_short(): void
    {
        [$releaseJob, $jobEnd] = $this->socketPair();
        [$releaseWorker, $workerEnd] = $this->socketPair();
        $jobs = ['a' => \Forklift\fork(fn () => trim(fgets($jobEnd)))];
        $this->expectTimeout(fn () => \Forklift\wait_any($jobs));
        $pool = new Pool(fn () => trim(fgets($workerEnd)), workers: 1);
        $task = $pool->submit(1);
        $this->expectTimeout(fn () => $pool->drain());
        $this->expectTimeout(fn () => $task->wait());
        fwrite($releaseJob, "job\n");
        fwrite($releaseWorker, "task\n");
        $this->assertSame('job', $jobs['a']->wait()->value());
        $this->assertSame('task', $task->wait()->value());
        $pool->shutdown();
    }

    private function expectTimeout(callable $wait): void
    {
        try {
            \Forklift\timeout(0.1, $wait);
            $this->fail('no TimeoutException');
        } catch (TimeoutException) {
            $this->addToAssertionCount(1);
        }
    }

    public function test_exit_in_a_handler_while_wait_blocks_ends_the_process_cleanly(): void
    {
        $code = <<<'PHP'
            pcntl_async_signals(true);
            pcntl_signal(SIGUSR1, function () { echo "handler\n"; exit(3); });
            $short = Forklift\fork(fn () => usleep(200000));
            echo "job ", $short->pid(), "\n";
            Forklift\fork(fn () => posix_kill(posix_getppid(), SIGUSR1));
            $short->wait();
            echo "not reached\n";
            PHP;
        ['status' => $status, 'out' => $out, 'err' => $err] = Subprocess::php($code);
        $this->assertSame(3, $status, "stdout: $out\nstderr: $err");
        $this->assertStringContainsString("handler\n", $out);
        $this->assertStringNotContainsString('not reached', $out);
        $this->assertSame('', $err);
        $this->assertMatchesRegularExpression('/job (\d+)/', $out);
        preg_match('/job (\d+)/', $out, $m);
        $this->assertFalse(Procfs::isAlive((int) $m[1]), 'the job was run to its end and reaped before the exit');
    }
}
