<?php

namespace Forklift\Tests;

use Forklift\Pool;
use Forklift\TimeoutException;
use Forklift\Tests\Support\OwnChannel;
use Forklift\Tests\Support\Procfs;
use Forklift\Tests\Support\Subprocess;
use PHPUnit\Framework\TestCase;

/**
 * Cases an adversarial review broke (each was a crash, a changed result, a lost timer or a killed
 * bystander), kept as specifications.
 */
final class ReviewFindingsTest extends TestCase
{
    private ?Pool $pool = null;

    protected function tearDown(): void
    {
        if ($this->pool !== null) {
            $this->pool->kill();
            $this->pool = null;
        }
    }

    public function test_running_out_of_memory_while_taking_a_result_ends_the_parent_as_php_would_not_with_a_crash(): void
    {
        $run = Subprocess::php(<<<'PHP'
            ini_set('memory_limit', '64M');
            $r = Forklift\fork(function () { ini_set('memory_limit', '-1'); return range(1, 3000000); })->wait();
            echo "not reached\n";
            PHP);
        $this->assertSame(255, $run['status'], $run['err']);
        $this->assertStringContainsString('Allowed memory size', $run['err']);
        $this->assertStringNotContainsString('not reached', $run['out']);
    }

    public function test_a_job_whose_value_runs_it_out_of_memory_while_serialized_is_oom(): void
    {
        $result = \Forklift\fork(function () {
            set_error_handler(null);
            $big = range(1, 1_500_000);
            ini_set('memory_limit', (string) ((memory_get_usage() >> 20) + 4) . 'M');
            return $big;
        })->wait();
        $this->assertSame('oom', $result->outcome(), (string) $result);
    }

    public function test_a_deadline_during_shutdown_reaches_the_caller_and_changes_no_result(): void
    {
        $pool = $this->pool = new Pool(fn ($x) => usleep(300000) ?? 'done', workers: 1);
        $task = $pool->submit(1);
        while ($pool->stats()['running'] === 0) {
            $task->isDone();
        }
        try {
            \Forklift\timeout(0.1, fn () => $pool->shutdown());
            $this->fail('no TimeoutException');
        } catch (TimeoutException) {
            $this->addToAssertionCount(1);
        }
        $this->assertSame('done', $task->wait()->value(), 'the task\'s result is its own');
        $this->assertSame([], $pool->shutdown(), 'the second shutdown() finishes the first');
    }

    public function test_a_job_forked_inside_a_timeout_scope_keeps_its_backstop(): void
    {
        $pid = 0;
        \Forklift\timeout(0.5, fn () => null);
        \Forklift\timeout(30.0, function () use (&$pid) {
            $job = \Forklift\fork(function () {
                pcntl_sigprocmask(SIG_BLOCK, array_values(array_diff(range(1, 64), [9, 19, 32, 33])));
                $t = microtime(true);
                while (microtime(true) - $t < 5) {
                    usleep(1000);
                }
            }, timeout: 0.3, grace: 0.1);
            $pid = $job->pid();
            // Busy in PHP code until the job is dead (or 3 s): only its own timers can end it.
            $started = hrtime(true);
            while (hrtime(true) - $started < 3e9 && Procfs::isAlive($pid)) {
            }
            $this->assertFalse(Procfs::isAlive($pid), 'its backstop SIGKILL fired');
            $this->assertSame('timeout', $job->wait()->outcome());
        });
    }

    public function test_a_job_that_joins_its_parents_group_never_takes_the_parent_down(): void
    {
        $run = Subprocess::php(<<<'PHP'
            $pg = posix_getpgrp();
            $p = Forklift\fork(function () use ($pg) { posix_setpgid(0, $pg); sleep(10); }, timeout: 0.2, grace: 0.1);
            $pid = $p->pid();
            $t = microtime(true);
            while (microtime(true) - $t < 3 && file_exists("/proc/$pid") && !str_contains(file_get_contents("/proc/$pid/stat"), ') Z')) {
            }
            echo "parent alive, job ", $p->wait()->outcome(), "\n";
            PHP);
        $this->assertSame(0, $run['status'], $run['err']);
        $this->assertSame("parent alive, job timeout\n", $run['out']);
    }

    public function test_a_pcntl_fork_helper_that_exits_inside_a_job_or_task_does_not_speak_for_it(): void
    {
        $helper = function () {
            $pid = pcntl_fork();
            if ($pid === 0) {
                exit(0);
            }
            pcntl_waitpid($pid, $status);
            return 'the value';
        };
        $this->assertSame('the value', \Forklift\fork($helper)->wait()->value());
        $pool = $this->pool = new Pool($helper, workers: 1);
        $this->assertSame('the value', $pool->submit(1)->wait()->value());
        $this->assertSame('the value', $pool->submit(2)->wait()->value());
    }

    public function test_keys_that_are_not_utf8_pass_through_byte_for_byte(): void
    {
        $key = "r\xe9sum\xe9.pdf";
        $jobs = [$key => \Forklift\fork(fn () => ["caf\xe9" => 1])];
        $this->assertSame($key, \Forklift\wait_any($jobs));
        $this->assertSame(["caf\xe9" => 1], $jobs[$key]->wait()->value());
        $pool = $this->pool = new Pool(fn (array $a) => array_keys($a), workers: 1);
        $tasks = [$key => $pool->submit(["caf\xe9" => 1])];
        $this->assertSame($key, $pool->waitAny($tasks));
        $this->assertSame(["caf\xe9"], $tasks[$key]->wait()->value());
        $thrown = \Forklift\fork(function () {
            throw new \RuntimeException("caf\xe9 au lait");
        })->wait();
        $this->assertStringContainsString('au lait', $thrown->exception()->message(), 'the message is kept');
    }

    public function test_a_resource_inside_php_containers_is_refused(): void
    {
        foreach ([new \ArrayObject(['f' => STDERR]), (function () {
            $s = new \SplObjectStorage();
            $s[new \stdClass()] = STDERR;
            return $s;
        })()] as $container) {
            $result = \Forklift\fork(fn () => $container)->wait();
            $this->assertSame('exception', $result->outcome(), get_class($container));
            $this->assertStringContainsString('the job returned a resource', $result->exception()->message());
        }
    }

    public function test_a_forged_end_of_task_fails_that_task_and_the_others_keep_their_results(): void
    {
        $before = OwnChannel::sockets();
        $pool = $this->pool = new Pool(function (string $what) use ($before) {
            if ($what === 'evil') {
                // A well-formed "task 999 ended" frame: length, kind 10, id, cpu, rss.
                OwnChannel::write(pack('V', 25) . chr(10) . pack('P', 999) . pack('P', 0) . pack('P', 0), $before);
                sleep(30);
            }
            return "result of $what";
        }, workers: 1);
        $evil = $pool->submit('evil');
        $next = $pool->submit('b');
        $result = \Forklift\timeout(10.0, fn () => $evil->wait());
        $this->assertSame('exception', $result->outcome());
        $this->assertStringContainsString('task 999 ended while it ran task', $result->exception()->message());
        $this->assertSame('result of b', \Forklift\timeout(10.0, fn () => $next->wait()->value()));
    }

    public function test_a_pool_task_s_dropped_sub_job_runs_to_its_end(): void
    {
        $file = tempnam(sys_get_temp_dir(), 'forklift-sub-');
        unlink($file);
        $pool = new Pool(function () use ($file) {
            \Forklift\fork(function () use ($file) {
                usleep(200000);
                file_put_contents($file, 'written');
            });
            return 'task done';
        }, workers: 1);
        $this->assertSame('task done', $pool->submit(1)->wait()->value());
        $pool->shutdown();
        $this->assertSame('written', @file_get_contents($file), 'the worker waited for it before leaving');
        @unlink($file);
    }

    public function test_wait_any_of_a_pool_refuses_another_pools_task(): void
    {
        $a = $this->pool = new Pool(fn ($x) => $x, workers: 1);
        $b = new Pool(fn ($x) => $x, workers: 1);
        // The exception leaves this method while $b is destroyed: it must survive that.
        $this->expectException(\Forklift\InvalidArgumentException::class);
        $this->expectExceptionMessage('is a task of another pool');
        $a->waitAny([$b->submit(1)], 1.0);
    }

    public function test_an_exception_leaving_a_scope_survives_the_pool_that_scope_destroys(): void
    {
        $make = function () {
            $pool = new Pool(fn ($x) => $x * 2, workers: 1);
            $pool->submit(21);
            throw new \DomainException('thrown past a pool with work left');
        };
        try {
            $make();
            $this->fail('the exception was lost');
        } catch (\DomainException $e) {
            $this->assertSame('thrown past a pool with work left', $e->getMessage());
        }
    }

    public function test_a_pool_destroyed_by_a_signal_handler_during_task_wait_gives_pool_exception(): void
    {
        pcntl_async_signals(true);
        $pool = new Pool(fn ($x) => usleep(500000) ?? 'late', workers: 1);
        $task = $pool->submit(1);
        $killer = \Forklift\fork(function () {
            $parent = posix_getppid();
            $deadline = hrtime(true) + 10e9;
            while (@file_get_contents("/proc/$parent/wchan") !== 'do_epoll_wait' && hrtime(true) < $deadline) {
                usleep(1000);
            }
            return posix_kill($parent, SIGUSR1);
        });
        pcntl_signal(SIGUSR1, function () use (&$pool) {
            $pool = null;
        });
        try {
            $task->wait();
            $this->fail('no exception');
        } catch (\Forklift\PoolException $e) {
            $this->assertStringContainsString('pool is gone', $e->getMessage());
        } finally {
            pcntl_signal(SIGUSR1, SIG_DFL);
            pcntl_async_signals(false);
        }
        $this->assertTrue($killer->wait()->value());
    }

    public function test_a_task_handed_back_by_kill_is_refused_by_wait_any_and_is_done(): void
    {
        $pool = $this->pool = new Pool(fn ($x) => usleep(200000), workers: 1);
        $pool->submit(1);
        $queued = $pool->submit(2);
        $back = $pool->kill();
        $this->assertArrayHasKey($queued->id(), $back);
        foreach ([fn () => $pool->waitAny([$queued]), fn () => $queued->isDone()] as $call) {
            try {
                $call();
                $this->fail('no exception');
            } catch (\Forklift\PoolException $e) {
                $this->assertStringContainsString('never ran: shutdown() or kill() handed it back', $e->getMessage());
            }
        }
    }

    public function test_a_timeout_inside_a_results_wakeup_fires_there(): void
    {
        $result = \Forklift\fork(fn () => new WakesUpWithATimeout())->wait();
        $this->assertSame(\Forklift\TimeoutException::class, $result->value()->got);
    }

    public function test_only_the_jobs_own_soft_timeout_makes_it_a_timeout(): void
    {
        $inner = \Forklift\fork(fn () => \Forklift\timeout(0.05, fn () => sleep(1)))->wait();
        $this->assertSame('exception', $inner->outcome());
        $this->assertFalse($inner->timedOut());
        $thrown = \Forklift\fork(function () {
            throw new \Forklift\TimeoutException('my own');
        })->wait();
        $this->assertSame('exception', $thrown->outcome());
        $soft = \Forklift\fork(fn () => sleep(2), softTimeout: 0.1)->wait();
        $this->assertSame('timeout', $soft->outcome());
        $this->assertTrue($soft->timedOut());
    }

    public function test_a_worker_slower_to_start_than_its_ttl_still_runs_the_task(): void
    {
        $pool = $this->pool = new Pool(fn ($x) => $x * 2, workers: 1, ttl: 0.05, onWorkerStart: function () {
            usleep(100000);
        });
        $this->assertSame(42, \Forklift\timeout(10.0, fn () => $pool->submit(21)->wait()->value()));
    }
}

final class WakesUpWithATimeout
{
    public string $got = 'nothing';

    public function __wakeup(): void
    {
        try {
            \Forklift\timeout(0.01, function () {
                $end = microtime(true) + 0.5;
                while (microtime(true) < $end) {
                }
            });
            $this->got = 'finished';
        } catch (\Throwable $e) {
            $this->got = get_class($e);
        }
    }
}
