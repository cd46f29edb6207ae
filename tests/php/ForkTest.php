<?php

declare(strict_types=1);

namespace Forklift\Tests;

use Forklift\JobFailedException;
use Forklift\JobResult;
use Forklift\Process;
use Forklift\Tests\Support\Procfs;
use PHPUnit\Framework\TestCase;

use function Forklift\fork;
use function Forklift\on_fork;
use function Forklift\wait_any;

/** Forklift\fork and its handles, with real forks: every outcome a job can have. */
final class ForkTest extends TestCase
{
    public function test_a_job_returns_its_value_with_arguments_passed_in(): void
    {
        $p = fork(fn (int $a, array $b) => ['sum' => $a + array_sum($b), 'pid' => getmypid()], 40, [1, 1]);
        $this->assertInstanceOf(Process::class, $p);
        $r = $p->wait();
        $this->assertSame('ok', $r->outcome());
        $this->assertTrue($r->ok());
        $this->assertSame(42, $r->value()['sum']);
        $this->assertSame($p->pid(), $r->value()['pid'], 'the job ran in the child, not in the parent');
        $this->assertNotSame(getmypid(), $p->pid());
        $this->assertSame(0, $r->exitCode());
        $this->assertNull($r->signal());
        $this->assertNull($r->cause());
        $this->assertSame([], $r->errors());
    }

    public function test_objects_and_nested_values_come_back_equal(): void
    {
        $value = new \ArrayObject(['when' => new \DateTimeImmutable('2020-01-02 03:04:05'), 'list' => range(1, 100)]);
        $back = fork(fn () => $value)->wait()->value();
        $this->assertEquals($value, $back);
    }

    public function test_a_second_wait_returns_the_same_result(): void
    {
        $p = fork(fn () => random_int(1, PHP_INT_MAX));
        $first = $p->wait();
        $second = $p->wait();
        $this->assertSame($first->value(), $second->value());
        $this->assertSame($first->duration(), $second->duration());
        $this->assertFalse($p->isRunning());
    }

    public function test_the_child_changes_nothing_in_the_parent(): void
    {
        $counter = 1;
        $r = fork(function () use (&$counter) {
            $counter = 99;
            $GLOBALS['forklift_test_global'] = 'child';
            return $counter;
        })->wait();
        $this->assertSame(99, $r->value());
        $this->assertSame(1, $counter);
        $this->assertArrayNotHasKey('forklift_test_global', $GLOBALS);
    }

    public function test_uncaught_exception_arrives_with_class_code_file_line_trace_and_previous(): void
    {
        $line = __LINE__ + 2;
        $r = fork(function () {
            throw new \DomainException('outer', 7, new \LogicException('inner', 3));
        })->wait();
        $this->assertSame('exception', $r->outcome());
        $this->assertFalse($r->ok());
        $this->assertNull($r->value());
        $e = $r->exception();
        $this->assertSame(\DomainException::class, $e->className());
        $this->assertSame('outer', $e->message());
        $this->assertSame(7, $e->code());
        $this->assertSame(__FILE__, $e->file());
        $this->assertSame($line, $e->line());
        $this->assertStringContainsString('{closure}', $e->trace());
        $this->assertSame(\LogicException::class, $e->previous()->className());
        $this->assertSame('inner', $e->previous()->message());
        $this->assertSame(3, $e->previous()->code());
        $this->assertNull($e->previous()->previous());
        $this->assertSame(255, $r->exitCode());
        $this->assertStringContainsString('uncaught DomainException: outer', $r->cause());
    }

    public function test_a_string_exception_code_is_kept_as_a_string(): void
    {
        $r = fork(function () {
            $e = new \PDOException('deadlock');
            // PDOException carries SQLSTATE codes as strings.
            (new \ReflectionProperty(\Exception::class, 'code'))->setValue($e, '40001');
            throw $e;
        })->wait();
        $this->assertSame('40001', $r->exception()->code());
    }

    public function test_exit_inside_a_job_is_the_jobs_exit_and_the_parent_lives_on(): void
    {
        $r = fork(function () {
            echo '';
            exit(3);
        })->wait();
        $this->assertSame('exit', $r->outcome());
        $this->assertSame(3, $r->exitCode());
        $this->assertStringContainsString('exited with code 3', $r->cause());
        $this->assertSame('exit', fork(fn () => exit(0))->wait()->outcome());
    }

    public function test_a_fatal_error_is_reported_with_file_line_and_trace(): void
    {
        $line = __LINE__ + 3;
        $r = fork(function () {
            set_error_handler(null); // PHPUnit's handler would turn the error into an exception.
            trigger_error('the ledger does not balance', E_USER_ERROR);
        })->wait();
        $this->assertSame('fatal', $r->outcome());
        $this->assertSame(255, $r->exitCode());
        $fatal = $r->fatalError();
        $this->assertSame(E_USER_ERROR, $fatal->level());
        $this->assertSame('E_USER_ERROR', $fatal->levelName());
        $this->assertSame('the ledger does not balance', $fatal->message());
        $this->assertSame(__FILE__, $fatal->file());
        $this->assertSame($line, $fatal->line());
        $this->assertTrue($fatal->isFatal());
        $this->assertStringContainsString('#0 trigger_error()', $fatal->trace()[0]);
        $this->assertStringContainsString('{closure}() at ' . __FILE__ . ":$line", $fatal->trace()[1]);
        $this->assertStringContainsString('fatal error: the ledger does not balance', $r->cause());
    }

    public function test_memory_exhaustion_is_outcome_oom_with_the_limit_and_the_fatal_record(): void
    {
        $r = fork(function () {
            ini_set('memory_limit', '16M');
            $hog = [];
            while (true) {
                $hog[] = str_repeat('x', 100000);
            }
        })->wait();
        $this->assertSame('oom', $r->outcome());
        $this->assertStringStartsWith('out of memory: exceeded the memory limit of 16 MB', $r->cause());
        $this->assertStringContainsString('Allowed memory size of 16777216 bytes exhausted', $r->fatalError()->message());
        $this->assertSame(E_ERROR, $r->fatalError()->level());
        $this->assertNotEmpty($r->fatalError()->trace());
    }

    public function test_maximum_execution_time_is_a_fatal_error(): void
    {
        $r = fork(function () {
            set_time_limit(1);
            $deadline = microtime(true) + 10;
            while (microtime(true) < $deadline) {
                // Burn CPU: set_time_limit counts CPU time on Linux.
            }
            return 'not reached';
        })->wait();
        $this->assertSame('fatal', $r->outcome());
        $this->assertStringContainsString('Maximum execution time of 1 second exceeded', $r->fatalError()->message());
    }

    public function test_records_made_before_a_segfault_are_kept(): void
    {
        $r = fork(function () {
            set_error_handler(null);
            trigger_error('about to crash', E_USER_WARNING);
            posix_kill(getmypid(), SIGSEGV);
        })->wait();
        $this->assertSame('signal', $r->outcome());
        $this->assertSame(SIGSEGV, $r->signal());
        $this->assertSame('SIGSEGV', $r->signalName());
        $this->assertNull($r->exitCode());
        $this->assertCount(1, $r->errors());
        $this->assertSame('about to crash', $r->errors()[0]->message());
        $this->assertStringContainsString('killed by signal 11 (SIGSEGV)', $r->cause());
    }

    public function test_a_job_killed_from_outside_is_recorded_as_killed(): void
    {
        [$parentEnd, $childEnd] = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, 0);
        $p = fork(function () use ($childEnd) {
            set_error_handler(null);
            trigger_error('started', E_USER_NOTICE);
            fwrite($childEnd, "ready\n");
            fgets($childEnd); // Blocks: the parent never answers.
        });
        $this->assertSame("ready\n", fgets($parentEnd));
        $this->assertTrue($p->isRunning());
        $this->assertTrue($p->signal(SIGKILL));
        $r = $p->wait();
        $this->assertSame('signal', $r->outcome());
        $this->assertSame(SIGKILL, $r->signal());
        $this->assertSame('started', $r->errors()[0]->message(), 'a record sent before the kill is kept');
        $this->assertNull($r->peakMemory(), 'a killed child could not say its peak memory');
        $this->assertFalse($p->signal(SIGTERM), 'an ended job cannot be signalled');
    }

    public function test_duration_cpu_time_and_memory_are_measured(): void
    {
        $r = fork(function () {
            $keep = str_repeat('m', 20 * 1024 * 1024);
            $t = hrtime(true);
            while (hrtime(true) - $t < 50_000_000) {
                // 50 ms of CPU.
            }
            return strlen($keep);
        })->wait();
        $this->assertSame('ok', $r->outcome());
        $this->assertGreaterThanOrEqual(0.05, $r->duration());
        $this->assertLessThan(10.0, $r->duration());
        $this->assertGreaterThanOrEqual(0.04, $r->cpuTime());
        $this->assertGreaterThan(20 * 1024 * 1024, $r->peakMemory());
        $this->assertGreaterThan(20 * 1024 * 1024, $r->maxRss());
    }

    public function test_value_or_throw_raises_job_failed_with_the_result(): void
    {
        $this->assertSame(5, fork(fn () => 5)->wait()->valueOrThrow());
        $r = fork(fn () => throw new \RuntimeException('no stock'))->wait();
        try {
            $r->valueOrThrow();
            $this->fail('valueOrThrow() on a failed job must throw');
        } catch (JobFailedException $e) {
            $this->assertStringContainsString('uncaught RuntimeException: no stock', $e->getMessage());
            $this->assertInstanceOf(JobResult::class, $e->getResult());
            $this->assertSame('no stock', $e->getResult()->exception()->message());
            $this->assertInstanceOf(\Forklift\ForkliftException::class, $e);
        }
    }

    public function test_a_closure_as_return_value_fails_that_job_with_a_clear_message(): void
    {
        $r = fork(fn () => fn () => 1)->wait();
        $this->assertSame('exception', $r->outcome());
        $this->assertSame('Forklift\ChannelException', $r->exception()->className());
        $this->assertStringContainsString("Serialization of 'Closure' is not allowed", $r->exception()->message());
        $this->assertSame(\Exception::class, $r->exception()->previous()->className());
    }

    public function test_a_resource_as_return_value_fails_that_job_with_a_clear_message(): void
    {
        $r = fork(fn () => ['ok' => 1, 'handle' => fopen('php://memory', 'r')])->wait();
        $this->assertSame('exception', $r->outcome());
        $this->assertSame('Forklift\ChannelException', $r->exception()->className());
        $this->assertStringContainsString('the job returned a resource at [handle]', $r->exception()->message());
    }

    public function test_wait_any_returns_the_key_of_the_first_to_finish(): void
    {
        [$parentEnd, $childEnd] = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, 0);
        $procs = [
            'slow' => fork(fn () => fgets($childEnd)),
            'fast' => fork(fn () => 'done'),
        ];
        $this->assertSame('fast', wait_any($procs));
        $this->assertSame('done', $procs['fast']->wait()->value());
        unset($procs['fast']);
        $this->assertNull(wait_any($procs, 0.05), 'the slow job waits for our line');
        fwrite($parentEnd, "go\n");
        $this->assertSame('slow', wait_any($procs));
        $this->assertSame("go\n", $procs['slow']->wait()->value());
    }

    public function test_wait_any_keeps_integer_keys_and_returns_finished_ones_at_once(): void
    {
        $procs = [7 => fork(fn () => 1)];
        $procs[7]->wait();
        $this->assertSame(7, wait_any($procs, 0.0));
    }

    public function test_output_of_the_job_is_flushed_and_parent_buffers_are_not_repeated(): void
    {
        $file = tempnam(sys_get_temp_dir(), 'forklift');
        ob_start();
        echo 'parent-buffered ';
        $r = fork(function () use ($file) {
            // The job's output goes to the file through its own buffer, flushed at its end.
            ob_start(fn (string $chunk) => file_put_contents($file, $chunk, FILE_APPEND) !== false ? '' : $chunk);
            echo 'child-output';
            return true;
        })->wait();
        $parentOutput = ob_get_clean();
        $this->assertTrue($r->ok());
        $this->assertSame('child-output', file_get_contents($file));
        $this->assertSame('parent-buffered ', $parentOutput);
        unlink($file);
    }

    public function test_the_child_never_runs_the_parents_shutdown_functions_or_destructors(): void
    {
        $file = tempnam(sys_get_temp_dir(), 'forklift');
        $script = sprintf(<<<'PHP'
            <?php
            $file = %s;
            register_shutdown_function(function () use ($file) {
                file_put_contents($file, 'shutdown:' . getmypid() . "\n", FILE_APPEND);
            });
            $guard = new class($file) {
                public function __construct(private string $file) {}
                public function __destruct() { file_put_contents($this->file, 'destruct:' . getmypid() . "\n", FILE_APPEND); }
            };
            $r = Forklift\fork(fn () => getmypid())->wait();
            $e = Forklift\fork(fn () => exit(4))->wait();
            $f = Forklift\fork(fn () => trigger_error('x', E_USER_ERROR))->wait();
            echo $r->value(), ' ', $e->exitCode(), ' ', $f->outcome(), "\n";
            PHP, var_export($file, true));
        $out = $this->runPhp($script);
        [$childPid, $exit, $fatal] = explode(' ', trim($out));
        $this->assertSame('4', $exit);
        $this->assertSame('fatal', $fatal);
        $lines = file($file, FILE_IGNORE_NEW_LINES);
        sort($lines);
        $this->assertCount(2, $lines, 'shutdown and destructor ran once each, in the parent: ' . implode(', ', $lines));
        $this->assertStringStartsWith('destruct:', $lines[0]);
        $this->assertStringStartsWith('shutdown:', $lines[1]);
        $this->assertStringNotContainsString(":$childPid", implode(',', $lines));
        unlink($file);
    }

    public function test_fork_hooks_run_in_order_on_each_side(): void
    {
        $file = tempnam(sys_get_temp_dir(), 'forklift');
        $script = sprintf(<<<'PHP'
            <?php
            $file = %s;
            $log = fn (string $what) => file_put_contents($file, $what . "\n", FILE_APPEND);
            Forklift\on_fork(fn () => $log('prepare1'), fn () => $log('parent1'), fn () => $log('child1'));
            Forklift\on_fork(prepare: fn () => $log('prepare2'), child: fn () => $log('child2'));
            $r = Forklift\fork(fn () => $log('job'))->wait();
            echo $r->outcome(), "\n";
            PHP, var_export($file, true));
        $this->assertSame("ok\n", $this->runPhp($script));
        $lines = file($file, FILE_IGNORE_NEW_LINES);
        // Prepare hooks run before the fork, last registered first.
        $this->assertSame(['prepare2', 'prepare1'], array_slice($lines, 0, 2));
        // After it, parent and child run at the same time: only each side's own order is fixed.
        $childSide = array_values(array_intersect($lines, ['child1', 'child2', 'job']));
        $this->assertSame(['child1', 'child2', 'job'], $childSide);
        $this->assertSame(['parent1'], array_values(array_intersect($lines, ['parent1'])));
        $this->assertCount(6, $lines);
        unlink($file);
    }

    public function test_a_throwing_child_hook_fails_the_job_and_a_throwing_prepare_hook_stops_the_fork(): void
    {
        $script = <<<'PHP'
            <?php
            Forklift\on_fork(child: fn () => throw new RuntimeException('no database in child'));
            $r = Forklift\fork(fn () => 'not reached')->wait();
            echo $r->outcome(), ': ', $r->exception()->message(), "\n";
            Forklift\on_fork(prepare: fn () => throw new LogicException('cannot close connection'));
            try {
                Forklift\fork(fn () => 1);
            } catch (LogicException $e) {
                echo 'prepare threw: ', $e->getMessage(), "\n";
            }
            PHP;
        $this->assertSame(
            "exception: no database in child\nprepare threw: cannot close connection\n",
            $this->runPhp($script)
        );
    }

    public function test_a_dropped_handle_is_still_run_and_reaped_by_the_end_of_the_request(): void
    {
        $file = tempnam(sys_get_temp_dir(), 'forklift');
        unlink($file);
        $script = sprintf(<<<'PHP'
            <?php
            Forklift\fork(function () {
                usleep(100000);
                file_put_contents(%s, 'ran');
            });
            echo "parent done\n";
            PHP, var_export($file, true));
        $this->assertSame("parent done\n", $this->runPhp($script));
        $this->assertSame('ran', file_get_contents($file), 'the request end waited for the dropped job');
        unlink($file);
    }

    public function test_a_job_can_fork_jobs_of_its_own_and_their_dropped_handles_are_waited_for(): void
    {
        $file = tempnam(sys_get_temp_dir(), 'forklift');
        $r = fork(function () use ($file) {
            $inner = fork(fn () => getmypid())->wait();
            fork(function () use ($file) {
                usleep(50000);
                file_put_contents($file, 'grandchild job ran');
            });
            return [$inner->outcome(), $inner->value() !== getmypid()];
        })->wait();
        $this->assertSame(['ok', true], $r->value());
        $this->assertSame('grandchild job ran', file_get_contents($file));
        unlink($file);
    }

    public function test_a_noisy_sibling_is_read_while_the_parent_waits_for_another_job(): void
    {
        // The quiet job ends only after the noisy one has sent all its records, which outgrow a
        // socket buffer: if waiting for the quiet job did not read the noisy one, neither would end.
        [$quietEnd, $noisyEnd] = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, 0);
        $quiet = fork(fn () => fgets($quietEnd));
        $noisy = fork(function () use ($noisyEnd) {
            set_error_handler(null);
            for ($i = 0; $i < 900; $i++) {
                trigger_error(str_repeat('d', 400) . " $i", E_USER_DEPRECATED);
            }
            fwrite($noisyEnd, "sent\n");
            return 'noisy done';
        });
        $this->assertSame(0, wait_any([$quiet], 20.0), 'the quiet job ended while we waited only for it');
        $this->assertSame("sent\n", $quiet->wait()->value());
        $this->assertSame('noisy done', $noisy->wait()->value());
        $this->assertCount(900, $noisy->wait()->errors());
    }

    public function test_a_flood_of_errors_is_capped_and_the_rest_counted(): void
    {
        $r = fork(function () {
            set_error_handler(null);
            for ($i = 0; $i < 1500; $i++) {
                trigger_error("notice $i", E_USER_NOTICE);
            }
            return 'done';
        })->wait();
        $this->assertSame('done', $r->value());
        $errors = $r->errors();
        $this->assertCount(1001, $errors);
        $this->assertSame('notice 999', $errors[999]->message());
        $this->assertStringContainsString('500 more errors were raised and not recorded', $errors[1000]->message());
    }

    public function test_an_exit_255_after_a_handled_user_error_is_an_exit_not_a_fatal_error(): void
    {
        $r = fork(function () {
            set_error_handler(fn () => true);
            trigger_error('handled', E_USER_ERROR);
            exit(255);
        })->wait();
        $this->assertSame('exit', $r->outcome());
        $this->assertSame(255, $r->exitCode());
    }

    public function test_a_resource_inside_a_returned_object_fails_the_job(): void
    {
        $r = fork(function () {
            $o = new \stdClass();
            $o->log = fopen('php://memory', 'w');
            return $o;
        })->wait();
        $this->assertSame('exception', $r->outcome());
        $this->assertStringContainsString('the job returned a resource at ->log', $r->exception()->message());
    }

    public function test_the_parents_output_callbacks_never_run_in_the_child(): void
    {
        $file = tempnam(sys_get_temp_dir(), 'forklift');
        ob_start(function (string $buffer) use ($file) {
            file_put_contents($file, getmypid() . "\n", FILE_APPEND);
            return $buffer;
        });
        $childPid = fork(fn () => getmypid())->wait()->value();
        ob_end_clean();
        $pids = file($file, FILE_IGNORE_NEW_LINES);
        $this->assertNotContains((string) $childPid, $pids);
        $this->assertContains((string) getmypid(), $pids, 'the callback did run, in the parent');
        unlink($file);
    }

    public function test_a_job_reaped_by_someone_else_is_reported_from_its_last_words_instead_of_hanging(): void
    {
        $p = fork(fn () => 1);
        $this->assertSame($p->pid(), pcntl_waitpid($p->pid(), $status));
        $r = $p->wait();
        // It said how it ended (its value, then its last words) before it exited: that stands.
        $this->assertSame('ok', $r->outcome(), (string) $r);
        $this->assertSame(1, $r->value());
        $this->assertSame(0, $r->exitCode());
    }

    public function test_a_timeout_too_large_for_the_clock_means_no_timeout(): void
    {
        $this->assertSame(0, wait_any([fork(fn () => 1)], 1e20));
    }

    public function test_igbinary_is_used_when_loaded_and_values_still_round_trip(): void
    {
        if (!extension_loaded('igbinary')) {
            $this->markTestSkipped('igbinary is not loaded');
        }
        $value = ['a' => 1.5, 'b' => [true, null, 'x'], 'c' => new \DateTimeImmutable('@0')];
        $this->assertEquals($value, fork(fn () => $value)->wait()->value());
    }

    /** Runs a PHP script in a fresh process with the extension loaded; returns its stdout. */
    private function runPhp(string $code): string
    {
        $file = tempnam(sys_get_temp_dir(), 'forklift') . '.php';
        file_put_contents($file, $code);
        $cmd = [PHP_BINARY, '-n', '-d', 'extension=' . Procfs::loadedExtension(), '-d', 'display_errors=0', $file];
        $proc = proc_open($cmd, [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        $status = proc_close($proc);
        unlink($file);
        $this->assertSame(0, $status, "script failed: $err");
        return $out;
    }
}
