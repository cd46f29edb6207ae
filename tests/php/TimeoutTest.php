<?php

declare(strict_types=1);

namespace Forklift\Tests;

use Forklift\ForkliftException;
use Forklift\TimeoutException;
use Forklift\Tests\Support\Procfs;
use PHPUnit\Framework\TestCase;

use function Forklift\fork;
use function Forklift\timeout;
use function Forklift\wait_any;

/**
 * Deadlines, with real processes and real signals:
 * - a job's `timeout:` is kept by the parent: SIGTERM to the job's process group at the deadline,
 *   SIGKILL `grace:` later; the outcome is "timeout" and what the job reported before is kept;
 * - a job's `softTimeout:` and Forklift\timeout() throw Forklift\TimeoutException inside the running
 *   code, which may catch it; they leave no timer and no signal handler behind.
 *
 * Jobs that block (sleep, a socket nobody writes to) or spin are what is under test here; the test
 * itself waits on events: a job's end, a line on a socket, a pid leaving /proc.
 */
final class TimeoutTest extends TestCase
{
    /** @var list<int> grandchildren a test saw; killed in tearDown if a failed test left them running */
    private array $strays = [];

    protected function tearDown(): void
    {
        foreach ($this->strays as $pid) {
            if (Procfs::isAlive($pid)) {
                posix_kill($pid, SIGKILL);
            }
        }
    }

    // ---- timeout: (wall clock, kept by the parent) ----------------------------------------------

    public function test_a_job_blocked_in_sleep_is_stopped_with_sigterm_at_its_timeout_and_keeps_its_records(): void
    {
        $line = __LINE__ + 3;
        $r = fork(function () {
            set_error_handler(null); // PHPUnit's handler would turn the notice into an exception.
            trigger_error('about to sleep', E_USER_NOTICE);
            sleep(30);
            return 'not reached';
        }, timeout: 0.2)->wait();

        $this->assertSame('timeout', $r->outcome(), (string) $r);
        $this->assertTrue($r->timedOut());
        $this->assertFalse($r->ok());
        $this->assertNull($r->value());
        $this->assertNull($r->exception());
        $this->assertSame('timed out after 0.2 s: stopped with SIGTERM', $r->cause());
        $this->assertStringNotContainsString('SIGKILL', $r->cause(), 'the job died of SIGTERM; no SIGKILL was needed');
        $this->assertSame(SIGTERM, $r->signal());
        $this->assertSame('SIGTERM', $r->signalName());
        $this->assertNull($r->exitCode());
        $this->assertCount(1, $r->errors(), 'the notice raised before the kill is kept');
        $this->assertSame('about to sleep', $r->errors()[0]->message());
        $this->assertSame($line, $r->errors()[0]->line());
        $this->assertGreaterThanOrEqual(0.2, $r->duration(), 'not stopped before its deadline');
        $this->assertLessThan(10.0, $r->duration(), 'stopped long before sleep(30) would have returned');
    }

    public function test_a_job_blocked_reading_a_socket_nobody_writes_to_is_stopped_at_its_timeout(): void
    {
        [$jobEnd, $testEnd] = $this->pair();
        $p = fork(function () use ($jobEnd) {
            fwrite($jobEnd, "reading\n");
            return fread($jobEnd, 1); // The test never writes: blocks until the deadline.
        }, timeout: 0.2);
        $this->assertSame("reading\n", fgets($testEnd));

        $r = $p->wait();
        $this->assertSame('timeout', $r->outcome(), (string) $r);
        $this->assertTrue($r->timedOut());
        $this->assertSame('SIGTERM', $r->signalName());
        $this->assertStringContainsString('timed out after 0.2 s', $r->cause());
        $this->assertLessThan(10.0, $r->duration());
        fclose($testEnd); // Only now: closing earlier would have ended the job's read.
    }

    public function test_a_job_that_ignores_sigterm_is_killed_with_sigkill_once_the_grace_period_is_over(): void
    {
        [$jobEnd, $testEnd] = $this->pair();
        $p = fork(function () use ($jobEnd) {
            pcntl_async_signals(true);
            pcntl_signal(SIGTERM, function () use ($jobEnd) {
                fwrite($jobEnd, "SIGTERM ignored\n");
            });
            fwrite($jobEnd, "spinning\n");
            while (true) {
                // Busy: only SIGKILL can end this.
            }
        }, timeout: 0.2, grace: 0.3);
        $this->assertSame("spinning\n", fgets($testEnd));

        $r = $p->wait();
        $this->assertSame('timeout', $r->outcome(), (string) $r);
        $this->assertTrue($r->timedOut());
        $this->assertSame(SIGKILL, $r->signal());
        $this->assertSame('SIGKILL', $r->signalName());
        $this->assertSame('timed out after 0.2 s: stopped with SIGTERM, then SIGKILL', $r->cause());
        $this->assertGreaterThanOrEqual(0.5, $r->duration(), 'SIGKILL came no earlier than timeout + grace');
        $this->assertLessThan(10.0, $r->duration());
        stream_set_blocking($testEnd, false);
        $this->assertSame("SIGTERM ignored\n", fread($testEnd, 100), 'SIGTERM came first, and the job saw it');
    }

    public function test_grace_zero_sends_sigkill_together_with_sigterm(): void
    {
        $r = fork(function () {
            pcntl_async_signals(true);
            pcntl_signal(SIGTERM, fn () => null);
            while (true) {
            }
        }, timeout: 0.2, grace: 0)->wait();

        $this->assertSame('timeout', $r->outcome(), (string) $r);
        $this->assertSame('SIGKILL', $r->signalName());
        $this->assertStringContainsString('then SIGKILL', $r->cause());
        // The default grace is 1 s: a job that ignores SIGTERM ends before that only if none was given.
        $this->assertLessThan(1.0, $r->duration(), 'no grace period was waited for');
    }

    public function test_grace_zero_on_a_job_that_does_not_handle_sigterm_ends_it_by_sigterm_or_sigkill(): void
    {
        // Both signals are sent back to back; which one the kernel ends the process with is a race.
        $r = fork(fn () => sleep(30), timeout: 0.2, grace: 0)->wait();

        $this->assertSame('timeout', $r->outcome(), (string) $r);
        $this->assertContains($r->signalName(), ['SIGTERM', 'SIGKILL']);
        $this->assertSame('timed out after 0.2 s: stopped with SIGTERM, then SIGKILL', $r->cause());
        $this->assertLessThan(10.0, $r->duration());
    }

    public function test_grandchildren_of_a_timed_out_job_die_with_it(): void
    {
        [$jobEnd, $testEnd] = $this->pair();
        $p = fork(function () use ($jobEnd) {
            $grandchild = pcntl_fork();
            if ($grandchild === 0) {
                fwrite($jobEnd, 'grandchild ' . posix_getpid() . "\n");
                fread($jobEnd, 1); // Blocks: nobody writes.
                posix_kill(posix_getpid(), SIGKILL); // Never run PHPUnit's shutdown here.
            }
            fread($jobEnd, 1);
            return 'not reached';
        }, timeout: 0.3);
        $line = rtrim((string) fgets($testEnd));
        $this->assertSame(1, preg_match('/^grandchild (\d+)$/', $line, $m), "the grandchild reported: '$line'");
        $grandchild = (int) $m[1];
        $this->strays[] = $grandchild;
        $this->assertTrue(Procfs::isAlive($grandchild), Procfs::describe($grandchild));
        $this->assertSame($p->pid(), Procfs::stat($grandchild)['ppid'], 'it is a child of the job');

        $r = $p->wait();
        $this->assertSame('timeout', $r->outcome(), (string) $r);
        $this->assertSame([], Procfs::waitUntilAllGone([$grandchild], 5.0), 'grandchild: ' . Procfs::describe($grandchild));
        fclose($testEnd);
    }

    public function test_a_job_that_ends_before_its_timeout_is_ok(): void
    {
        $r = fork(fn (int $n) => $n * 2, 21, timeout: 5.0)->wait();
        $this->assertSame('ok', $r->outcome(), (string) $r);
        $this->assertSame(42, $r->value());
        $this->assertFalse($r->timedOut());
        $this->assertNull($r->cause());
        $this->assertSame(0, $r->exitCode());
        $this->assertNull($r->signal());

        $both = fork(fn () => 'quick', softTimeout: 2, timeout: 5, grace: 0.5)->wait();
        $this->assertSame('quick', $both->valueOrThrow());
        $this->assertFalse($both->timedOut());
    }

    public function test_a_job_that_ended_before_its_deadline_is_ok_even_when_the_parent_looks_after_it(): void
    {
        $started = hrtime(true);
        $waited = fork(fn () => 'done', timeout: 0.2);
        $asked = fork(fn () => 'done', timeout: 0.2);
        // Both exit at once (our unreaped children: zombies). The parent makes no Forklift call
        // until both deadlines have passed: it keeps deadlines only inside one.
        $this->assertSame([], Procfs::waitUntilAllGone([$waited->pid(), $asked->pid()], 10.0), 'both jobs exited');
        $left = $started + 300_000_000 - hrtime(true);
        if ($left > 0) {
            usleep(intdiv($left, 1000)); // Not a synchronisation: the deadline passing is the point.
        }

        $r = $waited->wait();
        $this->assertSame('ok', $r->outcome(), 'no deadline ended this job: ' . $r);
        $this->assertSame('done', $r->value());
        $this->assertFalse($r->timedOut());

        $this->assertFalse($asked->isRunning());
        $this->assertSame('ok', $asked->wait()->outcome(), 'no deadline ended this job: ' . $asked->wait());
    }

    public function test_wait_any_returns_a_job_stopped_at_its_timeout_and_leaves_the_others_running(): void
    {
        [$jobEnd, $testEnd] = $this->pair();
        $a = fork(fn () => sleep(30), timeout: 0.2);
        $b = fork(fn () => fgets($jobEnd)); // No timeout: waits for the test's line.

        $started = hrtime(true);
        $this->assertSame(0, wait_any([$a]));
        $this->assertLessThan(10.0, (hrtime(true) - $started) / 1e9, 'returned at the deadline, not after sleep(30)');
        $this->assertSame('timeout', $a->wait()->outcome());
        $this->assertTrue($b->isRunning(), 'the deadline of one job does not touch another');

        fwrite($testEnd, "go\n");
        $rb = $b->wait();
        $this->assertSame("go\n", $rb->value());
        $this->assertFalse($rb->timedOut());
    }

    public function test_a_deadline_is_kept_while_the_parent_waits_for_another_job(): void
    {
        // B ends when the last copy of A's end of the pair is closed: when A is gone. So B->wait()
        // returns only if the parent stops A at its deadline while waiting for B.
        [$aEnd, $bEnd] = $this->pair();
        $a = fork(function () use ($aEnd) {
            sleep(30);
            return 'not reached';
        }, timeout: 0.2);
        $b = fork(function () use ($aEnd, $bEnd) {
            fclose($aEnd);
            return ['read' => fread($bEnd, 1), 'eof' => feof($bEnd)];
        });
        fclose($aEnd);

        $started = hrtime(true);
        $rb = $b->wait();
        $this->assertLessThan(10.0, (hrtime(true) - $started) / 1e9, 'A was stopped while we waited for B');
        $this->assertSame(['read' => '', 'eof' => true], $rb->value(), (string) $rb);
        $ra = $a->wait();
        $this->assertSame('timeout', $ra->outcome(), (string) $ra);
        $this->assertSame('SIGTERM', $ra->signalName());
    }

    public function test_is_running_keeps_the_deadline_too(): void
    {
        $p = fork(fn () => sleep(30), timeout: 0.2);
        // Poll only isRunning(), never wait(): the job must still end at its deadline.
        $deadline = hrtime(true) + 10_000_000_000;
        while ($p->isRunning() && hrtime(true) < $deadline) {
            usleep(1000);
        }
        $this->assertFalse($p->isRunning(), 'the job was stopped while the parent only asked isRunning()');
        $this->assertSame('timeout', $p->wait()->outcome());
    }

    // ---- softTimeout: (in the job) ---------------------------------------------------------------

    public function test_soft_timeout_throws_timeout_exception_inside_a_busy_job(): void
    {
        $line = __LINE__ + 2; // The loop's line: where the engine checks for interrupts.
        $r = fork(function () {
            while (true) {
                // CPU-bound: no call, no I/O.
            }
        }, softTimeout: 0.2)->wait();

        $this->assertSame('timeout', $r->outcome(), (string) $r);
        $this->assertTrue($r->timedOut());
        $e = $r->exception();
        $this->assertNotNull($e);
        $this->assertSame('Forklift\TimeoutException', $e->className());
        $this->assertSame('the job (softTimeout) ran past its deadline of 0.2 s', $e->message());
        $this->assertSame(__FILE__, $e->file());
        $this->assertSame($line, $e->line());
        $this->assertStringContainsString('timed out: Forklift\TimeoutException: the job (softTimeout) ran past its deadline of 0.2 s', $r->cause());
        $this->assertNull($r->signal(), 'the job ended by itself, nobody killed it');
        $this->assertSame(255, $r->exitCode());
    }

    public function test_soft_timeout_ends_a_sleep_early(): void
    {
        $r = fork(fn () => sleep(30), softTimeout: 0.2)->wait();
        $this->assertSame('timeout', $r->outcome(), (string) $r);
        $this->assertSame('Forklift\TimeoutException', $r->exception()->className());
        $this->assertNull($r->signal());
        $this->assertLessThan(10.0, $r->duration());
    }

    public function test_a_job_that_catches_its_soft_timeout_and_returns_is_ok(): void
    {
        $r = fork(function () {
            try {
                while (true) {
                }
            } catch (TimeoutException $e) {
                return 'rolled back: ' . $e->getMessage();
            }
        }, softTimeout: 0.2)->wait();

        $this->assertSame('ok', $r->outcome(), (string) $r);
        $this->assertSame('rolled back: the job (softTimeout) ran past its deadline of 0.2 s', $r->value());
        $this->assertFalse($r->timedOut());
        $this->assertNull($r->exception());
    }

    public function test_a_job_that_swallows_its_soft_timeout_is_stopped_by_its_timeout(): void
    {
        [$jobEnd, $testEnd] = $this->pair();
        $r = fork(function () use ($jobEnd) {
            $caught = 0;
            $told = false;
            while (true) {
                try {
                    if ($caught > 0 && !$told) {
                        $told = true;
                        fwrite($jobEnd, "caught\n");
                    }
                    while (true) {
                    }
                } catch (TimeoutException) {
                    $caught++; // And on with the loop, as if nothing happened.
                }
            }
        }, softTimeout: 0.1, timeout: 0.4)->wait();

        $this->assertSame('timeout', $r->outcome(), (string) $r);
        $this->assertTrue($r->timedOut());
        $this->assertSame('timed out after 0.4 s: stopped with SIGTERM', $r->cause());
        $this->assertSame('SIGTERM', $r->signalName());
        $this->assertNull($r->exception(), 'the job never let a TimeoutException out');
        stream_set_blocking($testEnd, false);
        $this->assertSame("caught\n", fread($testEnd, 100), 'the soft timeout fired first and was caught');
    }

    // ---- Forklift\timeout() (in this process) ----------------------------------------------------

    public function test_timeout_interrupts_a_busy_loop(): void
    {
        $started = hrtime(true);
        $e = $this->thrownBy(fn () => timeout(0.1, function () {
            while (true) {
            }
        }));
        $elapsed = (hrtime(true) - $started) / 1e9;

        $this->assertSame(TimeoutException::class, get_class($e));
        $this->assertInstanceOf(ForkliftException::class, $e);
        $this->assertSame('Forklift\timeout(): the callable ran past its deadline of 0.1 s', $e->getMessage());
        $this->assertGreaterThanOrEqual(0.099, $elapsed, 'not before the deadline');
        $this->assertLessThan(10.0, $elapsed);
    }

    public function test_timeout_ends_sleep_early_and_throws(): void
    {
        $started = hrtime(true);
        $e = $this->thrownBy(fn () => timeout(0.1, fn () => sleep(30)));
        $this->assertSame(TimeoutException::class, get_class($e));
        $this->assertLessThan(10.0, (hrtime(true) - $started) / 1e9, 'sleep(30) returned early');
    }

    public function test_timeout_ends_usleep_early_and_throws(): void
    {
        $started = hrtime(true);
        $e = $this->thrownBy(fn () => timeout(0.1, fn () => usleep(30_000_000)));
        $this->assertSame(TimeoutException::class, get_class($e));
        $this->assertLessThan(10.0, (hrtime(true) - $started) / 1e9, 'usleep(30 s) returned early');
    }

    public function test_timeout_returns_what_a_quick_callable_returns(): void
    {
        $object = new \stdClass();
        $this->assertSame($object, timeout(5, fn () => $object));
        $this->assertSame(['a' => 1, 'b' => [2]], timeout(5.0, fn () => ['a' => 1, 'b' => [2]]));
        $this->assertNull(timeout(5, function () {
        }));
        $this->assertSame('STRTOUPPER', timeout(5, fn () => strtoupper('strtoupper')));
    }

    public function test_the_callables_own_exception_propagates_unchanged(): void
    {
        $own = new \LogicException('the ledger does not balance', 7);
        $e = $this->thrownBy(fn () => timeout(5, fn () => throw $own));
        $this->assertSame($own, $e, 'the very same exception object');
        $this->assertNull($e->getPrevious());
    }

    public function test_a_shorter_inner_timeout_fires_first_with_its_own_message(): void
    {
        $e = $this->thrownBy(fn () => timeout(30, fn () => timeout(0.1, fn () => sleep(30))));
        $this->assertSame(TimeoutException::class, get_class($e));
        $this->assertSame('Forklift\timeout(): the callable ran past its deadline of 0.1 s', $e->getMessage());

        // The outer call goes on when its code catches the inner timeout.
        $outer = timeout(30, function () {
            try {
                return timeout(0.1, fn () => sleep(30));
            } catch (TimeoutException $e) {
                return 'recovered from: ' . $e->getMessage();
            }
        });
        $this->assertSame('recovered from: Forklift\timeout(): the callable ran past its deadline of 0.1 s', $outer);
    }

    public function test_a_shorter_outer_timeout_holds_even_when_inner_code_catches_the_exception(): void
    {
        $caughtInside = [];
        $started = hrtime(true);
        // (Closures with use (&...) all the way: an arrow function would capture a copy.)
        $e = $this->thrownBy(function () use (&$caughtInside) {
            return timeout(0.1, function () use (&$caughtInside) {
                return timeout(30, function () use (&$caughtInside) {
                    try {
                        sleep(30);
                    } catch (TimeoutException $e) {
                        $caughtInside[] = $e->getMessage();
                    }
                    while (true) {
                        // Carries on as if nothing happened: the exception comes again.
                    }
                });
            });
        });

        $this->assertSame(['Forklift\timeout(): the callable ran past its deadline of 0.1 s'], $caughtInside);
        $this->assertSame(TimeoutException::class, get_class($e));
        $this->assertSame('Forklift\timeout(): the callable ran past its deadline of 0.1 s', $e->getMessage());
        $this->assertLessThan(10.0, (hrtime(true) - $started) / 1e9, 'thrown again by the outer deadline, not the inner 30 s one');
    }

    public function test_no_timer_or_signal_handler_is_left_behind(): void
    {
        $signo = SIGRTMIN + 7;
        $this->assertFalse($this->catches($signo), 'before: SIGRTMIN+7 has its default disposition');
        $this->assertSame([], $this->timerSignals(), 'before: no POSIX timer');

        $inside = timeout(5, fn () => [$this->catches($signo), $this->timerSignals()]);
        $this->assertSame([true, [$signo]], $inside, 'while it runs: one timer raising SIGRTMIN+7, and its handler');
        $this->assertFalse($this->catches($signo), 'after a return: handler gone');
        $this->assertSame([], $this->timerSignals(), 'after a return: timer gone');

        $this->thrownBy(fn () => timeout(0.05, fn () => timeout(5, fn () => sleep(30))));
        $this->assertFalse($this->catches($signo), 'after a throw from nested calls: handler gone');
        $this->assertSame([], $this->timerSignals(), 'after a throw from nested calls: timer gone');
        $this->assertFalse($this->blocks($signo), 'and the signal is not left blocked');

        $started = hrtime(true);
        usleep(200_000);
        $this->assertGreaterThanOrEqual(0.19, (hrtime(true) - $started) / 1e9, 'a later usleep() is not cut short');
        $this->assertSame(7, timeout(1, fn () => 7), 'and timeout() works again');
    }

    public function test_pcntl_alarm_still_fires_inside_timeout(): void
    {
        $async = pcntl_async_signals(true);
        $alarms = 0;
        pcntl_signal(SIGALRM, function () use (&$alarms) {
            $alarms++;
        });
        try {
            pcntl_alarm(1);
            $slept = timeout(3, fn () => sleep(2)); // SIGALRM at 1 s, Forklift's deadline at 3 s.
        } finally {
            pcntl_alarm(0);
            pcntl_signal(SIGALRM, SIG_DFL);
            pcntl_async_signals($async);
        }
        $this->assertSame(1, $alarms, "the application's SIGALRM handler ran");
        $this->assertIsInt($slept, 'timeout() returned what sleep() did; no TimeoutException');
    }

    public function test_an_applications_signal_handler_runs_during_and_after_timeout(): void
    {
        $async = pcntl_async_signals(true);
        $received = [];
        pcntl_signal(SIGUSR1, function () use (&$received) {
            $received[] = 'SIGUSR1';
        });
        try {
            // No pcntl_signal_dispatch(): the handler runs through pcntl's async hook, which
            // Forklift's interrupt hook must keep calling. A signal to oneself is delivered before
            // posix_kill() returns, and the handler runs at the next safe point.
            $during = timeout(5, function () use (&$received) {
                posix_kill(posix_getpid(), SIGUSR1);
                return $received;
            });
            $this->assertSame(['SIGUSR1'], $during, 'during timeout()');

            timeout(1, fn () => 1);
            $this->thrownBy(fn () => timeout(0.05, fn () => sleep(30)));
            posix_kill(posix_getpid(), SIGUSR1);
            $this->assertSame(['SIGUSR1', 'SIGUSR1'], $received, 'after timeout() returned and threw');
            $this->assertIsCallable(pcntl_signal_get_handler(SIGUSR1), 'the handler is still the application\'s');
        } finally {
            pcntl_signal(SIGUSR1, SIG_DFL);
            pcntl_async_signals($async);
        }
    }

    // ---- helpers ---------------------------------------------------------------------------------

    /** @return array{resource, resource} a connected pair of sockets */
    private function pair(): array
    {
        $pair = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
        $this->assertIsArray($pair);
        return $pair;
    }

    /** Runs `$call`, which must throw; returns what it threw. */
    private function thrownBy(\Closure $call): \Throwable
    {
        try {
            $returned = $call();
        } catch (\Throwable $e) {
            return $e;
        }
        $this->fail('expected an exception, got ' . var_export($returned, true));
    }

    /**
     * Whether this process has a handler for `$signo` (SigCgt in /proc/PID/status). Not
     * pcntl_signal_get_handler(): PHP 8.2's refuses signals above 32 with a ValueError.
     */
    private function catches(int $signo): bool
    {
        return $this->signalMaskHas('SigCgt', $signo);
    }

    /** Whether this process blocks `$signo` (SigBlk in /proc/PID/status). */
    private function blocks(int $signo): bool
    {
        return $this->signalMaskHas('SigBlk', $signo);
    }

    private function signalMaskHas(string $field, int $signo): bool
    {
        // By pid, not /proc/self: PHP's realpath cache would keep /proc/self pointing at a parent.
        $status = (string) file_get_contents('/proc/' . posix_getpid() . '/status');
        $this->assertSame(1, preg_match("/^$field:\\s+([0-9a-f]+)$/m", $status, $m), "$field in /proc/PID/status");
        return $this->bitFromHex($m[1], $signo - 1);
    }

    /** Bit `$bit` of a hexadecimal mask of any length. */
    private function bitFromHex(string $hex, int $bit): bool
    {
        $digit = strlen($hex) - 1 - intdiv($bit, 4);
        return $digit >= 0 && ((hexdec($hex[$digit]) >> ($bit % 4)) & 1) === 1;
    }

    /** @return list<int> the signal each POSIX timer of this process raises (/proc/PID/timers) */
    private function timerSignals(): array
    {
        $timers = @file_get_contents('/proc/' . posix_getpid() . '/timers');
        if ($timers === false) {
            $this->markTestSkipped('/proc/PID/timers is not available (CONFIG_CHECKPOINT_RESTORE)');
        }
        preg_match_all('/^signal: (\d+)\//m', $timers, $m);
        return array_map('intval', $m[1]);
    }


    public function test_a_timeout_cut_short_by_a_fatal_error_does_not_fire_in_shutdown_code(): void
    {
        $script = tempnam(sys_get_temp_dir(), 'forklift') . '.php';
        file_put_contents($script, <<<'PHP'
            <?php
            register_shutdown_function(function () {
                usleep(300000); // past the 0.1 s deadline of the timeout() that died
                echo "shutdown ran to its end\n";
            });
            Forklift\timeout(0.1, fn () => trigger_error('fatal inside timeout()', E_USER_ERROR));
            PHP);
        $ext = Procfs::loadedExtension();
        $proc = proc_open([PHP_BINARY, '-n', '-d', "extension=$ext", '-d', 'display_errors=0', $script], [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        $status = proc_close($proc);
        unlink($script);
        $this->assertSame(255, $status, $err);
        $this->assertSame("shutdown ran to its end\n", $out, 'no TimeoutException in the shutdown function: ' . $err);
    }
}
