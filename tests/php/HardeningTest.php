<?php

namespace Forklift\Tests;

use Forklift\Pool;
use Forklift\PoolException;
use Forklift\Tests\Support\OwnChannel;
use Forklift\Tests\Support\Procfs;
use PHPUnit\Framework\TestCase;

/**
 * What a hostile but realistic user broke before: values that hung the check for resources or
 * slipped a resource through, the frame limit off by a few bytes, a pool stuck on a worker's
 * broken channel, a throwing onResult that made an accepted task look refused, zombies after a
 * crash loop, a pool larger than the limits, and jobs whose status someone else took.
 */
final class HardeningTest extends TestCase
{
    private ?Pool $pool = null;

    protected function tearDown(): void
    {
        if ($this->pool !== null) {
            $this->pool->kill();
            $this->pool = null;
        }
        if (function_exists('pcntl_signal')) {
            pcntl_signal(SIGCHLD, SIG_DFL);
        }
    }

    /** Five nodes that all point back to the root and share one array by reference. */
    private static function sharedGraph(): \stdClass
    {
        $root = new \stdClass();
        $nodes = [];
        for ($i = 0; $i < 5; $i++) {
            $n = new \stdClass();
            $n->parent = $root;
            $n->siblings = &$nodes;
            $nodes[] = $n;
        }
        $root->kids = $nodes;
        return $root;
    }

    public function test_an_object_graph_with_shared_references_is_sent_both_ways(): void
    {
        $graph = self::sharedGraph();
        $back = \Forklift\fork(fn () => $graph)->wait();
        $this->assertSame('ok', $back->outcome(), (string) $back);
        $this->assertCount(5, $back->value()->kids);
        $this->assertSame($back->value(), $back->value()->kids[4]->parent, 'references survive');
        $pool = $this->pool = new Pool(fn (\stdClass $g) => count($g->kids[0]->siblings), workers: 1);
        $this->assertSame(5, $pool->submit($graph)->wait()->value());
    }

    public function test_a_resource_in_a_declared_property_fails_the_job_and_the_submit_with_where_it_is(): void
    {
        $holder = new ResourceHolder();
        $holder->handle = fopen('php://memory', 'r');
        $result = \Forklift\fork(fn () => $holder)->wait();
        $this->assertSame('exception', $result->outcome());
        $this->assertStringContainsString('the job returned a resource at ->handle', $result->exception()->message());
        $pool = $this->pool = new Pool(fn ($x) => 1, workers: 1);
        $this->expectException(\Forklift\InvalidArgumentException::class);
        $this->expectExceptionMessage('the payload holds a resource at [wrapped]->handle');
        $pool->submit(['wrapped' => $holder]);
    }

    public function test_max_frame_size_is_exactly_the_largest_value_that_can_be_sent(): void
    {
        $old = ini_set('forklift.max_frame_size', '2048');
        try {
            $serialize = function_exists('igbinary_serialize') ? 'igbinary_serialize' : 'serialize';
            $n = 2048;
            while (strlen($serialize(str_repeat('x', $n))) > 2048) {
                $n--;
            }
            $this->assertSame(2048, strlen($serialize(str_repeat('x', $n))));
            $fits = \Forklift\fork(fn () => str_repeat('x', $n))->wait();
            $over = \Forklift\fork(fn () => str_repeat('x', $n + 1))->wait();
            $pool = $this->pool = new Pool(fn (string $s) => strlen($s), workers: 1);
            $task = $pool->submit(str_repeat('y', $n));
            $this->assertSame($n, $task->wait()->value(), 'a payload of exactly the limit reaches the worker');
            try {
                $pool->submit(str_repeat('y', $n + 1));
                $this->fail('a payload over the limit was accepted');
            } catch (\Forklift\InvalidArgumentException $e) {
                $this->assertStringContainsString('over the limit of 2048 bytes (forklift.max_frame_size)', $e->getMessage());
            }
        } finally {
            ini_set('forklift.max_frame_size', $old);
        }
        $this->assertSame('ok', $fits->outcome(), (string) $fits);
        $this->assertSame('exception', $over->outcome());
        $this->assertStringContainsString('2049 bytes serialized, over the limit of 2048 bytes', $over->exception()->message());
    }

    public function test_a_worker_that_breaks_its_channel_fails_only_its_task_and_the_pool_goes_on(): void
    {
        $before = OwnChannel::sockets();
        $pool = $this->pool = new Pool(function (string $what) use ($before) {
            if ($what === 'bogus') {
                // A header announcing a 4 GB frame.
                OwnChannel::write(pack('V', 0xFFFFFFF0), $before);
                sleep(30);
            }
            return $what;
        }, workers: 1);
        $bogus = $pool->submit('bogus');
        $after = $pool->submit('after');
        $result = \Forklift\timeout(10.0, fn () => $bogus->wait());
        $this->assertSame('exception', $result->outcome(), (string) $result);
        $this->assertSame('Forklift\ChannelException', $result->exception()->className());
        $this->assertStringContainsString('is over the limit', $result->exception()->message());
        $this->assertSame('after', \Forklift\timeout(10.0, fn () => $after->wait()->value()), 'a fresh worker runs the rest');
    }

    public function test_a_throwing_on_result_never_makes_an_accepted_task_look_refused(): void
    {
        $pool = $this->pool = new Pool(fn (int $n) => $n, workers: 2, queueSize: 2);
        $pool->onResult(function () {
            throw new \LogicException('callback failed');
        });
        $accepted = [];
        $thrown = 0;
        for ($n = 0; $n < 30; $n++) {
            try {
                $accepted[] = $pool->submit($n);
            } catch (\LogicException) {
                // Thrown while submit() waited for room, before this task was accepted.
                $thrown++;
            }
        }
        $this->assertSame(count($accepted), $pool->stats()['submitted'], 'a submit() that threw accepted nothing');
        $this->assertGreaterThan(0, $thrown, 'callbacks ran (and threw) while submit() waited for room');
        // A throwing callback's exception leaves whichever pool call ran it; the call can be
        // made again, and the other callbacks run at the pool's next calls.
        foreach ($accepted as $task) {
            for ($try = 0; ; $try++) {
                try {
                    $this->assertTrue($task->wait()->ok(), 'every accepted task ran');
                    break;
                } catch (\LogicException) {
                    $this->assertLessThan(100, $try);
                }
            }
        }
        $this->assertSame(count($accepted), $pool->stats()['completed']);
        // The callbacks still owed run at the pool's next calls, one throw at a time.
        for ($try = 0; ; $try++) {
            try {
                $pool->drain();
                break;
            } catch (\LogicException) {
                $this->assertLessThan(100, $try);
            }
        }
    }

    public function test_a_pool_stopped_by_a_crash_loop_leaves_no_zombie(): void
    {
        $pool = $this->pool = new Pool(fn () => 1, workers: 2, onWorkerStart: fn () => exit(9));
        $result = $pool->submit(1)->wait();
        $this->assertSame('exception', $result->outcome());
        $this->assertSame(PoolException::class, $result->exception()->className());
        $this->assertStringContainsString('died before they were ready', $result->exception()->message());
        $this->assertSame([], Procfs::zombieChildren());
    }

    public function test_a_pool_larger_than_the_open_files_limit_is_refused_at_once_naming_the_limit(): void
    {
        [, $hard] = [0, (int) trim((string) shell_exec('ulimit -Hn'))];
        $workers = intdiv($hard, 2) + 1;
        $started = hrtime(true);
        try {
            new Pool(fn () => 1, workers: $workers);
            $this->fail('no exception');
        } catch (\Forklift\InvalidArgumentException $e) {
            $this->assertStringContainsString("$workers workers need about", $e->getMessage());
            $this->assertStringContainsString("limit of $hard (ulimit -Hn)", $e->getMessage());
        }
        $this->assertLessThan(1.0, (hrtime(true) - $started) / 1e9, 'refused before forking');
        $this->assertSame([], Procfs::zombieChildren());
    }

    public function test_with_sigchld_ignored_a_job_that_said_how_it_ended_keeps_its_outcome(): void
    {
        if (!function_exists('pcntl_signal')) {
            $this->markTestSkipped('pcntl is not loaded');
        }
        pcntl_signal(SIGCHLD, SIG_IGN);
        $exited = \Forklift\fork(fn () => exit(3))->wait();
        $value = \Forklift\fork(fn () => 42)->wait();
        $killed = \Forklift\fork(fn () => posix_kill(getmypid(), SIGKILL))->wait();
        pcntl_signal(SIGCHLD, SIG_DFL);
        $this->assertSame('exit', $exited->outcome());
        $this->assertSame(3, $exited->exitCode());
        $this->assertSame(42, $value->value());
        $this->assertSame('exception', $killed->outcome());
        $this->assertStringContainsString('reaped by someone else', $killed->exception()->message());
    }

    public function test_a_grandchild_that_left_the_session_dies_with_the_job(): void
    {
        [$parentEnd, $toParent] = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
        [$jobEnd, $toJob] = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
        $job = \Forklift\fork(function () use ($toParent, $toJob, $jobEnd) {
            // A double fork into a new session: out of the job's process group and session.
            $first = pcntl_fork();
            if ($first === 0) {
                posix_setsid();
                if (pcntl_fork() === 0) {
                    fwrite($toParent, getmypid() . "\n");
                    fwrite($toJob, "running\n");
                    sleep(60);
                }
                // Leave without PHP's shutdown (it would run the test runner's).
                posix_kill(getmypid(), SIGKILL);
            }
            pcntl_waitpid($first, $status);
            // The grandchild runs, orphaned, in its own session, when the job ends.
            return trim(fgets($jobEnd));
        });
        $grandchild = (int) fgets($parentEnd);
        $this->assertGreaterThan(0, $grandchild);
        $result = $job->wait();
        $this->assertSame('running', $result->value(), (string) $result);
        $this->assertFalse(Procfs::isAlive($grandchild), Procfs::describe($grandchild));
        foreach ([$parentEnd, $toParent, $jobEnd, $toJob] as $s) {
            fclose($s);
        }
    }

    public function test_a_finished_job_not_yet_reaped_leaves_no_grandchild_to_outlive_a_killed_parent(): void
    {
        $code = <<<'PHP'
            $job = Forklift\fork(function () {
                $grandchild = pcntl_fork();
                if ($grandchild === 0) {
                    fgets(STDIN); // blocks: only a kill ends it
                    posix_kill(posix_getpid(), SIGKILL);
                }
                echo "job ", getmypid(), " grandchild $grandchild\n";
                return 'done';
            });
            // Busy in PHP code from now on: the finished job stays unreaped.
            while (true) {
            }
            PHP;
        $proc = proc_open(
            [PHP_BINARY, '-d', 'extension=' . Procfs::loadedExtension(), '-r', $code],
            [0 => ['pipe', 'r'], 1 => ['pipe', 'w'], 2 => ['file', '/dev/null', 'w']],
            $pipes
        );
        $parent = proc_get_status($proc)['pid'];
        $line = (string) fgets($pipes[1]);
        $this->assertMatchesRegularExpression('/^job (\d+) grandchild (\d+)$/', trim($line));
        preg_match('/^job (\d+) grandchild (\d+)$/', trim($line), $m);
        [$job, $grandchild] = [(int) $m[1], (int) $m[2]];
        // The event: the job has ended (a zombie its busy parent has not reaped).
        $this->assertSame([], Procfs::waitUntilAllGone([$job], 10.0));
        $this->assertSame('Z', Procfs::stat($job)['state'] ?? 'gone', 'the job waits to be reaped');
        $this->assertFalse(Procfs::isAlive($grandchild), 'the job killed what it spawned before it ended: ' . Procfs::describe($grandchild));
        posix_kill($parent, SIGKILL);
        pcntl_waitpid($parent, $status);
        fclose($pipes[0]);
        fclose($pipes[1]);
        proc_close($proc);
        $this->assertSame([], Procfs::waitUntilAllGone([$job, $grandchild], 1.0));
    }

    public function test_a_job_that_left_its_group_and_ignores_sigterm_is_still_stopped_at_its_deadline(): void
    {
        $job = \Forklift\fork(function () {
            posix_setpgid(0, posix_getpgid(posix_getppid()));
            pcntl_signal(SIGTERM, SIG_IGN);
            sleep(30);
        }, timeout: 0.2, grace: 0.2);
        $pid = $job->pid();
        $result = $job->wait();
        $this->assertSame('timeout', $result->outcome());
        $this->assertSame(SIGKILL, $result->signal());
        $this->assertStringContainsString('stopped with SIGTERM, then SIGKILL', $result->cause());
        $this->assertFalse(Procfs::isAlive($pid));
    }

    public function test_a_job_that_ends_after_sigterm_is_not_reported_as_killed(): void
    {
        $result = \Forklift\fork(function () {
            pcntl_async_signals(true);
            pcntl_signal(SIGTERM, function () {
                exit(0);
            });
            sleep(30);
        }, timeout: 0.2, grace: 5.0)->wait();
        $this->assertSame('timeout', $result->outcome());
        $this->assertSame('timed out after 0.2 s: stopped with SIGTERM', $result->cause());
    }

    public function test_a_job_that_blocks_every_signal_dies_at_its_deadline_while_the_parent_is_busy(): void
    {
        $started = hrtime(true);
        $job = \Forklift\fork(function () {
            // Every signal glibc lets a program block (32 and 33 are its own).
            pcntl_sigprocmask(SIG_BLOCK, array_diff(range(1, 64), [32, 33]));
            sleep(30);
        }, timeout: 0.2, grace: 0.1);
        $pid = $job->pid();
        // Busy in PHP code, no Forklift call, until the job is dead (or 3 s).
        while (hrtime(true) - $started < 3e9 && Procfs::isAlive($pid)) {
            for ($i = 0; $i < 10000; $i++) {
            }
        }
        $this->assertFalse(Procfs::isAlive($pid), 'the job outlived its backstop');
        $result = $job->wait();
        $this->assertSame('timeout', $result->outcome(), (string) $result);
        $this->assertStringContainsString('its own timer', $result->cause());
    }
}

final class ResourceHolder
{
    /** @var resource|null */
    public $handle = null;
    public int $count = 1;
}
