<?php

namespace Forklift\Tests;

use Forklift\ForkException;
use Forklift\ForkliftException;
use Forklift\InvalidArgumentException;
use Forklift\JobFailedException;
use Forklift\Process;
use Forklift\Tests\Support\Procfs;
use Forklift\Tests\Support\Subprocess;
use PHPUnit\Framework\TestCase;

/**
 * Wrong input gets an exception of the documented class whose message says what to pass instead;
 * a handle used from the wrong process and a fork() the kernel refuses are reported the same way.
 */
final class BadInputTest extends TestCase
{
    /** The message every "not callable" rejection carries: what a callable may be. */
    private const CALLABLE_HINT = "must be a callable (a Closure, a function name, [\$object, 'method'] or an invokable object)";

    /**
     * Each case is a call that must be refused. It receives a job that is still running (blocked
     * until the test releases it), so that Process::signal() validates against a live child.
     *
     * @return array<string, array{\Closure(Process): mixed, class-string<\Throwable>, list<string>}>
     */
    public function bad_inputs(): array
    {
        $invalid = InvalidArgumentException::class;
        return [
            // fork(): the job must be callable
            'fork of an undefined function name' => [
                fn () => \Forklift\fork('no_such_function'),
                $invalid, ['Forklift\fork(): argument #1 ($job)', self::CALLABLE_HINT, 'string "no_such_function" given'],
            ],
            'fork of an int' => [
                fn () => \Forklift\fork(42),
                $invalid, ['argument #1 ($job)', self::CALLABLE_HINT, 'int 42 given'],
            ],
            'fork of null' => [
                fn () => \Forklift\fork(null),
                $invalid, ['argument #1 ($job)', self::CALLABLE_HINT, 'null given'],
            ],
            'fork of an object and a missing method' => [
                fn () => \Forklift\fork([new \stdClass(), 'nope']),
                $invalid, ['argument #1 ($job)', self::CALLABLE_HINT, 'array given'],
            ],
            'fork of an empty string' => [
                fn () => \Forklift\fork(''),
                $invalid, ['argument #1 ($job)', self::CALLABLE_HINT, 'string "" given'],
            ],
            'fork of a missing static method' => [
                fn () => \Forklift\fork('stdClass::nope'),
                $invalid, ['argument #1 ($job)', self::CALLABLE_HINT, 'string "stdClass::nope" given'],
            ],
            'fork of an object that is not invokable' => [
                fn () => \Forklift\fork(new \stdClass()),
                $invalid, ['argument #1 ($job)', self::CALLABLE_HINT, 'object of class stdClass given'],
            ],
            'fork of an array naming a method the object lacks' => [
                fn () => \Forklift\fork([new \ArrayObject(), 'frobnicate']),
                $invalid, ['argument #1 ($job)', 'array given', 'class ArrayObject does not have a method "frobnicate"'],
            ],
            'fork of an empty array' => [
                fn () => \Forklift\fork([]),
                $invalid, ['argument #1 ($job)', self::CALLABLE_HINT, 'array given'],
            ],
            'fork without a job' => [
                fn () => \Forklift\fork(),
                \ArgumentCountError::class, ['Forklift\fork() expects at least 1 argument, 0 given'],
            ],

            // forklift.max_frame_size is checked at every fork
            'fork with forklift.max_frame_size 0' => [
                function () {
                    ini_set('forklift.max_frame_size', '0');
                    return \Forklift\fork(fn () => 1);
                },
                $invalid, ['forklift.max_frame_size is "0"', 'at least 1024'],
            ],
            'fork with forklift.max_frame_size 10' => [
                function () {
                    ini_set('forklift.max_frame_size', '10');
                    return \Forklift\fork(fn () => 1);
                },
                $invalid, ['forklift.max_frame_size is "10"', 'at least 1024'],
            ],
            'fork with a forklift.max_frame_size that is not a number' => [
                function () {
                    ini_set('forklift.max_frame_size', '64 megs');
                    return \Forklift\fork(fn () => 1);
                },
                $invalid, ['forklift.max_frame_size is "64 megs"', 'a number of bytes'],
            ],
            'fork with a negative forklift.max_frame_size' => [
                function () {
                    ini_set('forklift.max_frame_size', '-5');
                    return \Forklift\fork(fn () => 1);
                },
                $invalid, ['forklift.max_frame_size is "-5"', 'at least 1024'],
            ],

            // on_fork(): callables or null, and at least one callable
            'on_fork with no hook at all' => [
                fn () => \Forklift\on_fork(),
                $invalid, ['Forklift\on_fork() needs at least one callable', 'on_fork(prepare: ..., parent: ..., child: ...)'],
            ],
            'on_fork with three nulls' => [
                fn () => \Forklift\on_fork(null, null, null),
                $invalid, ['Forklift\on_fork() needs at least one callable'],
            ],
            'on_fork with an undefined function as prepare hook' => [
                fn () => \Forklift\on_fork(prepare: 'nope'),
                $invalid, ['Forklift\on_fork(): argument #1 ($prepare)', self::CALLABLE_HINT, 'string "nope" given'],
            ],
            'on_fork with an int as parent hook' => [
                fn () => \Forklift\on_fork(null, 42),
                $invalid, ['Forklift\on_fork(): argument #2 ($parent)', self::CALLABLE_HINT, 'int 42 given'],
            ],
            'on_fork with an empty array as child hook' => [
                fn () => \Forklift\on_fork(null, null, []),
                $invalid, ['Forklift\on_fork(): argument #3 ($child)', self::CALLABLE_HINT, 'array given'],
            ],

            // wait_any(): a non-empty array of Process, a finite timeout of 0 or more
            'wait_any of an empty array' => [
                fn () => \Forklift\wait_any([]),
                $invalid, ['Forklift\wait_any(): argument #1 ($processes) is empty', 'pass at least one Forklift\Process'],
            ],
            'wait_any of an int' => [
                fn () => \Forklift\wait_any([1]),
                $invalid, ['element [0] of argument #1 ($processes) must be a Forklift\Process', 'int 1 given'],
            ],
            'wait_any of an object that is not a Process' => [
                fn () => \Forklift\wait_any(['x' => new \stdClass()]),
                $invalid, ['element [x] of argument #1 ($processes) must be a Forklift\Process', 'object of class stdClass given'],
            ],
            'wait_any of a Process next to an int' => [
                fn (Process $p) => \Forklift\wait_any([$p, 1]),
                $invalid, ['element [1] of argument #1 ($processes) must be a Forklift\Process', 'int 1 given'],
            ],
            'wait_any with a negative timeout' => [
                fn (Process $p) => \Forklift\wait_any([$p], -1.0),
                $invalid, ['argument #2 ($timeout) must be a finite number of seconds, 0 or more', '-1 given'],
            ],
            'wait_any with a NAN timeout' => [
                fn (Process $p) => \Forklift\wait_any([$p], NAN),
                $invalid, ['argument #2 ($timeout) must be a finite number of seconds, 0 or more', 'NaN given'],
            ],
            'wait_any with an infinite timeout' => [
                fn (Process $p) => \Forklift\wait_any([$p], INF),
                $invalid, ['argument #2 ($timeout) must be a finite number of seconds, 0 or more', 'inf given'],
            ],
            'wait_any of a string' => [
                fn () => \Forklift\wait_any('x'),
                \TypeError::class, ['processes'],
            ],
            'wait_any with a string timeout' => [
                fn (Process $p) => \Forklift\wait_any([$p], 'x'),
                \TypeError::class, ['timeout'],
            ],

            // fork()'s limits: timeout: and softTimeout: more than 0, grace: 0 or more, all finite numbers
            'fork with a negative timeout' => [
                fn () => \Forklift\fork(fn () => 1, timeout: -1),
                $invalid, ['Forklift\fork(): $timeout must be a finite number of seconds, more than 0 and at most 1e9 (e.g. 2.5)', '-1 given'],
            ],
            'fork with a timeout of 0' => [
                fn () => \Forklift\fork(fn () => 1, timeout: 0),
                $invalid, ['Forklift\fork(): $timeout must be a finite number of seconds, more than 0', '0 given'],
            ],
            'fork with a NAN timeout' => [
                fn () => \Forklift\fork(fn () => 1, timeout: NAN),
                $invalid, ['Forklift\fork(): $timeout must be a finite number of seconds, more than 0', 'NaN given'],
            ],
            'fork with an infinite timeout' => [
                fn () => \Forklift\fork(fn () => 1, timeout: INF),
                $invalid, ['Forklift\fork(): $timeout must be a finite number of seconds, more than 0', 'inf given'],
            ],
            'fork with a string timeout' => [
                fn () => \Forklift\fork(fn () => 1, timeout: '1'),
                $invalid, ['Forklift\fork(): $timeout must be a number of seconds (e.g. 2.5)', 'string "1" given'],
            ],
            'fork with grace but no timeout' => [
                fn () => \Forklift\fork(fn () => 1, grace: 1),
                $invalid, ['Forklift\fork(): grace: only applies with a timeout:', 'add timeout: or drop grace:'],
            ],
            'fork with a negative grace' => [
                fn () => \Forklift\fork(fn () => 1, timeout: 1, grace: -1),
                $invalid, ['Forklift\fork(): $grace must be a finite number of seconds, 0 or more and at most 1e9 (e.g. 2.5)', '-1 given'],
            ],
            'fork with a softTimeout longer than its timeout' => [
                fn () => \Forklift\fork(fn () => 1, softTimeout: 2, timeout: 1),
                $invalid, ['Forklift\fork(): softTimeout: (2 s) must be shorter than timeout: (1 s)', 'the kill comes later'],
            ],
            'fork with a softTimeout equal to its timeout' => [
                fn () => \Forklift\fork(fn () => 1, softTimeout: 1, timeout: 1),
                $invalid, ['softTimeout: (1 s) must be shorter than timeout: (1 s)'],
            ],
            'fork with a softTimeout of 0' => [
                fn () => \Forklift\fork(fn () => 1, softTimeout: 0),
                $invalid, ['Forklift\fork(): $softTimeout must be a finite number of seconds, more than 0', '0 given'],
            ],
            'fork with a misspelt named argument' => [
                fn () => \Forklift\fork(fn () => 1, timout: 1),
                $invalid, ['Forklift\fork(): unknown named argument $timout', "the job's options are timeout:, grace: and softTimeout:", 'passed by position'],
            ],

            // timeout(): more than 0 seconds, finite, and a callable
            'timeout of 0 seconds' => [
                fn () => \Forklift\timeout(0, fn () => 1),
                $invalid, ['Forklift\timeout(): argument #1 ($seconds) must be a finite number of seconds, more than 0 and at most 1e9 (e.g. 2.5)', '0 given'],
            ],
            'timeout of -1 seconds' => [
                fn () => \Forklift\timeout(-1, fn () => 1),
                $invalid, ['Forklift\timeout(): argument #1 ($seconds) must be a finite number of seconds, more than 0', '-1 given'],
            ],
            'timeout of NAN seconds' => [
                fn () => \Forklift\timeout(NAN, fn () => 1),
                $invalid, ['Forklift\timeout(): argument #1 ($seconds) must be a finite number of seconds, more than 0', 'NaN given'],
            ],
            'timeout of INF seconds' => [
                fn () => \Forklift\timeout(INF, fn () => 1),
                $invalid, ['Forklift\timeout(): argument #1 ($seconds) must be a finite number of seconds, more than 0', 'inf given'],
            ],
            'timeout of an undefined function name' => [
                fn () => \Forklift\timeout(1, 'nope'),
                $invalid, ['Forklift\timeout(): argument #2 ($fn)', self::CALLABLE_HINT, 'string "nope" given'],
            ],
            'timeout with a string of seconds' => [
                fn () => \Forklift\timeout('x', fn () => 1),
                \TypeError::class, ['seconds'],
            ],

            // Process::signal(): a signal number
            'signal 0' => [
                fn (Process $p) => $p->signal(0),
                $invalid, ['Forklift\Process::signal(): 0 is not a signal number', 'SIGTERM (15)'],
            ],
            'signal -9' => [
                fn (Process $p) => $p->signal(-9),
                $invalid, ['Forklift\Process::signal(): -9 is not a signal number', 'SIGTERM (15)'],
            ],
            'signal 9999' => [
                fn (Process $p) => $p->signal(9999),
                $invalid, ['Forklift\Process::signal(): 9999 is not a signal number', 'pass one of the SIG* constants (1 to 64), e.g. SIGTERM (15)'],
            ],
            'signal 2**40, beyond a C int' => [
                fn (Process $p) => $p->signal(2 ** 40),
                $invalid, ['Forklift\Process::signal(): 1099511627776 is not a signal number', 'SIGTERM (15)'],
            ],
            'signal of a string' => [
                fn (Process $p) => $p->signal('x'),
                \TypeError::class, ['signo'],
            ],
            'signal of null' => [
                fn (Process $p) => $p->signal(null),
                \TypeError::class, ['signo'],
            ],

            // Blackbox::capture(): a callable
            'capture of an undefined function name' => [
                fn () => \Forklift\Blackbox::capture('nope'),
                $invalid, ['Forklift\Blackbox::capture(): argument #1 ($fn)', self::CALLABLE_HINT, 'string "nope" given'],
            ],
            'capture of an int' => [
                fn () => \Forklift\Blackbox::capture(42),
                $invalid, ['Forklift\Blackbox::capture(): argument #1 ($fn)', self::CALLABLE_HINT, 'int 42 given'],
            ],
        ];
    }

    /**
     * @dataProvider bad_inputs
     * @param list<string> $fragments
     */
    public function test_bad_input_is_refused_with_the_exact_class_and_a_message_saying_what_to_pass(
        \Closure $call,
        string $expectedClass,
        array $fragments
    ): void {
        [$hold, $release] = $this->pair();
        $running = \Forklift\fork(fn () => fread($hold, 1));
        $frameSize = ini_get('forklift.max_frame_size');
        $thrown = null;
        try {
            $call($running);
        } catch (\Throwable $e) {
            $thrown = $e;
        } finally {
            ini_restore('forklift.max_frame_size');
            $this->assertSame($frameSize, ini_get('forklift.max_frame_size'), 'ini_restore() restores the setting');
            fwrite($release, 'x');
            $end = $running->wait();
        }

        $this->assertNotNull($thrown, "expected $expectedClass, but the call succeeded");
        $this->assertSame($expectedClass, get_class($thrown), (string) $thrown);
        foreach ($fragments as $fragment) {
            $this->assertStringContainsString($fragment, $thrown->getMessage());
        }
        $this->assertSame('ok', $end->outcome(), 'the job used as a live handle ends normally: ' . $end);
        $this->assertSame($frameSize, ini_get('forklift.max_frame_size'));
    }

    public function test_waiting_inside_a_child_for_the_parents_job_is_refused(): void
    {
        $this->assertRefusedInsideAnotherJob(fn (Process $a) => $a->wait());
    }

    public function test_signalling_the_parents_job_from_inside_a_child_is_refused(): void
    {
        $this->assertRefusedInsideAnotherJob(fn (Process $a) => $a->signal(SIGTERM));
    }

    public function test_asking_whether_the_parents_job_runs_from_inside_a_child_is_refused(): void
    {
        $this->assertRefusedInsideAnotherJob(fn (Process $a) => $a->isRunning());
    }

    public function test_wait_any_on_the_parents_job_from_inside_a_child_is_refused(): void
    {
        $this->assertRefusedInsideAnotherJob(fn (Process $a) => \Forklift\wait_any([$a], 0.0));
    }

    public function test_value_or_throw_on_a_failed_job_throws_job_failed_carrying_the_result(): void
    {
        $result = \Forklift\fork(function () {
            throw new \RuntimeException('the job could not finish', 7);
        })->wait();

        try {
            $result->valueOrThrow();
            $this->fail('valueOrThrow() returned for a job that threw');
        } catch (\Throwable $e) {
            $this->assertSame(JobFailedException::class, get_class($e));
            $this->assertInstanceOf(ForkliftException::class, $e);
            $this->assertSame('exception', $e->getResult()->outcome());
            $this->assertSame($result->cause(), $e->getResult()->cause());
            $this->assertStringContainsString('uncaught RuntimeException: the job could not finish', $e->getMessage());
            $this->assertStringContainsString($result->cause(), $e->getMessage());
            $this->assertStringContainsString('job ' . $result->pid() . ' failed', $e->getMessage());
        }
    }

    public function test_value_or_throw_on_a_job_that_exited_names_the_exit_code(): void
    {
        $result = \Forklift\fork(function () {
            exit(3);
        })->wait();

        try {
            $result->valueOrThrow();
            $this->fail('valueOrThrow() returned for a job that called exit(3)');
        } catch (\Throwable $e) {
            $this->assertSame(JobFailedException::class, get_class($e));
            $this->assertSame('exit', $e->getResult()->outcome());
            $this->assertSame(3, $e->getResult()->exitCode());
            $this->assertStringContainsString('exited with code 3', $e->getMessage());
        }
    }

    public function test_fork_refused_by_the_process_limit_throws_fork_exception_naming_the_limit(): void
    {
        if (posix_geteuid() !== 0) {
            $this->markTestSkipped('needs root to run PHP as uid 65534 with RLIMIT_NPROC=1 (prlimit + setpriv)');
        }
        foreach (['prlimit', 'setpriv'] as $tool) {
            if (trim((string) shell_exec('command -v ' . $tool)) === '') {
                $this->markTestSkipped("$tool (util-linux) is not installed");
            }
        }
        $extension = Procfs::loadedExtension();
        $this->assertTrue(
            (fileperms($extension) & 0004) !== 0,
            "$extension must be readable by uid 65534, which loads it"
        );

        // As an unprivileged uid with RLIMIT_NPROC=1, the PHP process itself uses up the limit:
        // fork() fails with EAGAIN.
        $code = <<<'PHP'
            $fds = fn () => count(scandir('/proc/self/fd'));
            // The first call makes the process's event loop (one epoll fd, kept): count after it.
            try { Forklift\fork(fn () => 1); } catch (\Throwable) {}
            $before = $fds();
            try {
                Forklift\fork(fn () => 1);
                $line = 'no exception';
            } catch (\Throwable $e) {
                $line = get_class($e) . ': ' . $e->getMessage();
            }
            echo json_encode(['line' => $line, 'leaked_fds' => $fds() - $before]);
            PHP;
        ['status' => $status, 'out' => $out, 'err' => $err] = Subprocess::php($code, [
            'prlimit', '--nproc=1:1',
            'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups',
        ]);

        $this->assertSame(0, $status, "stdout: $out\nstderr: $err");
        $report = json_decode($out, true);
        $this->assertIsArray($report, "stdout: $out\nstderr: $err");
        $this->assertStringStartsWith(ForkException::class . ': ', $report['line']);
        $this->assertStringContainsString('fork() failed: EAGAIN', $report['line']);
        $this->assertStringContainsString('process limit (ulimit -u, pids cgroup)', $report['line']);
        $this->assertStringContainsString('wait for running jobs before starting more', $report['line']);
        $this->assertSame(0, $report['leaked_fds'], 'the failed fork closes the channel it had opened');
    }

    /**
     * Forks job A, blocked until released, then job B that applies `$use` to A's handle and returns
     * the exception it got. Only the process that forked A may wait for it or signal it.
     *
     * @param \Closure(Process): mixed $use
     */
    private function assertRefusedInsideAnotherJob(\Closure $use): void
    {
        [$hold, $release] = $this->pair();
        $a = \Forklift\fork(fn () => fread($hold, 1));
        try {
            $b = \Forklift\fork(function () use ($a, $use) {
                try {
                    return ['returned', var_export($use($a), true)];
                } catch (\Throwable $e) {
                    return [get_class($e), $e->getMessage()];
                }
            })->wait();
            $this->assertTrue($a->isRunning(), 'job A is still blocked, untouched by job B');
        } finally {
            fwrite($release, 'x');
            $aResult = $a->wait();
        }

        $this->assertSame('ok', $b->outcome(), (string) $b);
        [$class, $message] = $b->value();
        $this->assertSame(ForkliftException::class, $class, $message);
        $this->assertStringContainsString(
            sprintf('process %d is a child of process %d, not of this process (%d)', $a->pid(), getmypid(), $b->pid()),
            $message
        );
        $this->assertStringContainsString('only the process that forked a job can wait for it or signal it', $message);
        $this->assertSame('ok', $aResult->outcome(), (string) $aResult);
        $this->assertSame('x', $aResult->value(), 'job A was released by the test, not disturbed by job B');
    }

    /** @return array{resource, resource} a connected pair: a job blocks reading the first until the test writes to the second */
    private function pair(): array
    {
        $pair = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
        $this->assertIsArray($pair);
        return $pair;
    }

    public function test_a_bad_signal_number_is_refused_even_after_the_job_ended(): void
    {
        $p = \Forklift\fork(fn () => 1);
        $p->wait();
        $this->assertFalse($p->signal(SIGTERM), 'a valid signal to an ended job: false');
        try {
            $p->signal(9999);
            $this->fail('signal(9999) must throw');
        } catch (\Forklift\InvalidArgumentException $e) {
            $this->assertStringContainsString('9999 is not a signal number', $e->getMessage());
        }
    }

    public function test_real_time_signals_are_signal_numbers_too(): void
    {
        [$hold, $release] = $this->pair();
        $p = \Forklift\fork(function () use ($hold) {
            pcntl_async_signals(true);
            pcntl_signal(SIGRTMIN + 1, fn () => exit(7));
            fwrite($hold, 'r');
            // A signal ends sleep() early; a blocking fread() would go on waiting for the rest of
            // default_socket_timeout (60 s) before the handler got to run.
            sleep(30);
            return 'not reached';
        });
        $this->assertSame('r', fread($release, 1));
        $this->assertTrue($p->signal(SIGRTMIN + 1));
        $this->assertSame(7, $p->wait()->exitCode());
    }
}
