<?php

namespace Forklift\Tests;

use Forklift\Process;
use Forklift\Tests\Support\OwnChannel;
use Forklift\Tests\Support\Procfs;
use PHPUnit\Framework\TestCase;

/**
 * Faults with real processes: a parent killed with SIGKILL, a thousand jobs (some never waited for),
 * and jobs that corrupt their own channel. Whatever happens, no process is left behind and the
 * fault stays with the job that caused it.
 */
final class FaultTest extends TestCase
{
    /** A parent script started by a test, and every pid it reported; cleaned up in tearDown. */
    private $parent = null;
    /** @var array<int, resource> */
    private array $parentPipes = [];
    /** @var list<int> */
    private array $reportedPids = [];
    private ?string $script = null;
    private ?string $stderr = null;

    protected function tearDown(): void
    {
        // Only for a test that failed half-way: end what it started, by pid.
        foreach ($this->reportedPids as $pid) {
            if (Procfs::isAlive($pid)) {
                posix_kill($pid, SIGKILL);
            }
        }
        if ($this->parent !== null) {
            // EOF on its stdin releases every job and grandchild still blocked on it.
            foreach ($this->parentPipes as $pipe) {
                if (is_resource($pipe)) {
                    fclose($pipe);
                }
            }
            proc_close($this->parent);
        }
        foreach ([$this->script, $this->stderr] as $file) {
            if ($file !== null) {
                @unlink($file);
            }
        }
    }

    public function test_sigkill_of_a_parent_takes_down_its_ten_jobs_and_their_grandchildren(): void
    {
        // Every job spawns a grandchild; both report themselves and then block reading the parent's
        // stdin, which the test holds open: only Forklift's death handling can end them.
        $this->script = tempnam(sys_get_temp_dir(), 'forklift-parent-');
        file_put_contents($this->script, <<<'PHP'
            <?php
            fwrite(STDOUT, 'parent ' . getmypid() . "\n");
            $jobs = [];
            for ($i = 0; $i < 10; $i++) {
                $jobs[] = Forklift\fork(function () {
                    $grandchild = pcntl_fork();
                    if ($grandchild === 0) {
                        fgets(STDIN);
                        posix_kill(posix_getpid(), SIGKILL);
                    }
                    fwrite(STDOUT, 'child ' . getmypid() . ' grandchild ' . $grandchild . "\n");
                    fgets(STDIN);
                    return 'released';
                });
            }
            Forklift\wait_any($jobs);
            PHP);
        $this->stderr = tempnam(sys_get_temp_dir(), 'forklift-parent-stderr-');
        $this->parent = proc_open(
            [PHP_BINARY, '-d', 'extension=' . Procfs::loadedExtension(), $this->script],
            [0 => ['pipe', 'r'], 1 => ['pipe', 'w'], 2 => ['file', $this->stderr, 'w']],
            $this->parentPipes
        );
        $this->assertIsResource($this->parent);
        $parentPid = proc_get_status($this->parent)['pid'];

        $this->assertSame("parent $parentPid", rtrim((string) fgets($this->parentPipes[1])));
        $pairs = [];
        while (count($pairs) < 10) {
            $line = fgets($this->parentPipes[1]);
            $this->assertNotFalse(
                $line,
                'the parent closed its stdout after ' . count($pairs) . ' jobs reported; its stderr: '
                . file_get_contents($this->stderr)
            );
            $this->assertMatchesRegularExpression('/^child (\d+) grandchild (\d+)$/', rtrim($line));
            preg_match('/^child (\d+) grandchild (\d+)$/', rtrim($line), $m);
            $pairs[] = [(int) $m[1], (int) $m[2]];
            array_push($this->reportedPids, (int) $m[1], (int) $m[2]);
        }

        $this->assertCount(20, array_unique($this->reportedPids));
        foreach ($pairs as [$child, $grandchild]) {
            $this->assertTrue(Procfs::isAlive($child), "job $child runs: " . Procfs::describe($child));
            $this->assertTrue(Procfs::isAlive($grandchild), "grandchild $grandchild runs: " . Procfs::describe($grandchild));
            $this->assertSame($parentPid, Procfs::stat($child)['ppid'], "job $child is a child of the parent");
            $this->assertSame($child, Procfs::stat($grandchild)['ppid'], "grandchild $grandchild is a child of job $child");
        }

        $this->assertTrue(posix_kill($parentPid, SIGKILL));
        // Reap the parent without proc_close(), which would close its stdin and release the jobs.
        $this->assertSame($parentPid, pcntl_waitpid($parentPid, $status));
        $this->assertTrue(pcntl_wifsignaled($status));
        $this->assertSame(SIGKILL, pcntl_wtermsig($status));

        $survivors = Procfs::waitUntilAllGone($this->reportedPids, 1.0);
        $this->assertSame(
            [],
            array_map(fn (int $pid) => Procfs::describe($pid), $survivors),
            'no job or grandchild outlives a parent killed with SIGKILL'
        );
    }

    public function test_a_thousand_jobs_some_never_waited_for_leave_no_zombie(): void
    {
        $waited = 0;
        $ok = 0;
        $sum = 0;
        $dropped = [];
        for ($batch = 0; $batch < 20; $batch++) {
            /** @var array<string, Process> $running */
            $running = [];
            for ($i = 0; $i < 50; $i++) {
                $n = $batch * 50 + $i;
                $p = \Forklift\fork(fn () => $n);
                if ($n % 10 === 9) {
                    // Dropped without wait(): Forklift reaps it at a later call.
                    $dropped[] = $p->pid();
                    unset($p);
                    continue;
                }
                $running["job$n"] = $p;
            }
            $results = [];
            if ($batch % 2 === 0) {
                while ($running !== []) {
                    $key = \Forklift\wait_any($running);
                    $this->assertArrayHasKey($key, $running);
                    $results[$key] = $running[$key]->wait();
                    unset($running[$key]);
                }
            } else {
                foreach ($running as $key => $p) {
                    $results[$key] = $p->wait();
                }
            }
            foreach ($results as $key => $result) {
                $waited++;
                if ($result->ok()) {
                    $ok++;
                    $this->assertSame((int) substr($key, 3), $result->value());
                    $sum += $result->value();
                }
            }
        }

        $this->assertSame(900, $waited);
        $this->assertSame(100, count($dropped));
        $this->assertSame($waited, $ok, 'every job that was waited for ended ok');
        $this->assertSame(array_sum(range(0, 999)) - array_sum(range(9, 999, 10)), $sum);

        // Dropped jobs are reaped at the next Forklift call once they have exited: wait for the
        // exits (a zombie or no entry at all), then make that call.
        $this->assertSame([], Procfs::waitUntilAllGone($dropped, 5.0), 'every dropped job has exited');
        $this->assertSame(1, \Forklift\fork(fn () => 1)->wait()->value());

        $this->assertSame([], Procfs::zombieChildren(), 'zombie children of the test process');
        foreach ($dropped as $pid) {
            $stat = Procfs::stat($pid);
            // Gone, or its pid already reused by a process that is not our child.
            $this->assertTrue($stat === null || $stat['ppid'] !== getmypid(), "dropped job $pid has been reaped: " . Procfs::describe($pid));
        }
    }

    public function test_garbage_on_a_channel_fails_that_job_only(): void
    {
        $sockets = OwnChannel::sockets();
        $before = \Forklift\fork(fn () => 'forked before');
        $garbage = \Forklift\fork(function () use ($sockets) {
            OwnChannel::write("\x05\x00\x00\x00\xC8garbage", $sockets);
            return 1;
        });
        $after = \Forklift\fork(fn () => 'forked after');

        $result = $garbage->wait();
        $this->assertSame('exception', $result->outcome(), (string) $result);
        $this->assertSame('Forklift\ChannelException', $result->exception()->className());
        $this->assertSame('job channel: unknown frame kind 200', $result->exception()->message());
        $this->assertNull($result->value());

        $this->assertSame('forked before', $before->wait()->valueOrThrow());
        $this->assertSame('forked after', $after->wait()->valueOrThrow());
        $this->assertSame(1, \Forklift\fork(fn () => 1)->wait()->value(), 'the parent forks on as before');
    }

    public function test_truncated_frame_then_sigkill_is_reported_as_the_signal(): void
    {
        $sockets = OwnChannel::sockets();
        $result = \Forklift\fork(function () use ($sockets) {
            OwnChannel::write(pack('V', 1000) . str_repeat("\x02", 10), $sockets);
            posix_kill(getmypid(), SIGKILL);
            return 1;
        })->wait();

        $this->assertSame('signal', $result->outcome(), (string) $result);
        $this->assertSame(SIGKILL, $result->signal());
        $this->assertSame('SIGKILL', $result->signalName());
        $this->assertSame('killed by signal 9 (SIGKILL)', $result->cause());
        $this->assertNull($result->exception());
    }

    public function test_truncated_frame_swallows_the_frames_after_it_and_fails_the_job(): void
    {
        // The header promises 100 bytes; the job's own value and stats frames fill part of them and
        // the stream ends inside the frame.
        $sockets = OwnChannel::sockets();
        $result = \Forklift\fork(function () use ($sockets) {
            OwnChannel::write(pack('V', 100) . str_repeat("\x02", 10), $sockets);
            return 1;
        })->wait();

        $this->assertSame('exception', $result->outcome(), (string) $result);
        $this->assertSame('Forklift\ChannelException', $result->exception()->className());
        $this->assertStringContainsString('job channel: the stream ended inside a frame', $result->exception()->message());
        $this->assertMatchesRegularExpression('/\(\d+ bytes of it arrived\)$/', $result->exception()->message());
        $this->assertSame(0, $result->exitCode(), 'the child itself exited cleanly');
        $this->assertNull($result->value());
    }

    public function test_header_announcing_a_frame_over_the_limit_is_refused_before_its_body(): void
    {
        $sockets = OwnChannel::sockets();
        $result = \Forklift\fork(function () use ($sockets) {
            OwnChannel::write(pack('V', 100000000), $sockets);
            return 1;
        })->wait();

        $this->assertSame('exception', $result->outcome(), (string) $result);
        $this->assertSame('Forklift\ChannelException', $result->exception()->className());
        $this->assertSame(
            'job channel: a frame of 100000004 bytes is over the limit: forklift.max_frame_size is 67108864 bytes (the largest value, serialized), and a frame adds at most 16',
            $result->exception()->message()
        );
    }

    public function test_return_value_over_max_frame_size_fails_the_job_with_a_channel_exception(): void
    {
        $old = ini_set('forklift.max_frame_size', '2048');
        try {
            $result = \Forklift\fork(fn () => str_repeat('x', 100000))->wait();
            $small = \Forklift\fork(fn () => str_repeat('x', 100))->wait();
        } finally {
            // ini_restore() does not restore this setting: put the old value back explicitly.
            ini_set('forklift.max_frame_size', $old);
        }

        $this->assertSame('exception', $result->outcome(), (string) $result);
        $this->assertSame('Forklift\ChannelException', $result->exception()->className());
        $message = $result->exception()->message();
        $this->assertStringContainsString('over the limit of 2048 bytes (forklift.max_frame_size)', $message);
        $this->assertStringContainsString('return less data, or raise the limit', $message);
        $this->assertNull($result->value());
        $this->assertSame(str_repeat('x', 100), $small->valueOrThrow(), 'a value under the limit still arrives');
        $this->assertSame($old, ini_get('forklift.max_frame_size'), 'the setting is back to what it was');
    }
}
