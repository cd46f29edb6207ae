<?php

declare(strict_types=1);

namespace Forklift\Tests;

use Forklift\Daemon;
use Forklift\InvalidArgumentException;
use Forklift\JobRun;
use Forklift\Tests\Support\DaemonKit;
use Forklift\Tests\Support\MemoryLogger;
use PHPUnit\Framework\TestCase;

/** Forklift\Daemon's dispatcher run in this process (run()): lanes, parallel runs, overlap, events, signals, stop. */
final class DaemonTest extends TestCase
{
    private string $dir;
    private MemoryLogger $log;

    protected function setUp(): void
    {
        $this->dir = DaemonKit::tempDir();
        $this->log = new MemoryLogger();
    }

    protected function tearDown(): void
    {
        DaemonKit::removeDir($this->dir);
    }

    private function daemon(float $stopTimeout = 10.0): Daemon
    {
        return new Daemon('test', pidFile: "$this->dir/test.pid", stopTimeout: $stopTimeout, logger: $this->log);
    }

    /** Runs `$d` until `$done()` says so (checked on a 5 ms timer), then stops it; returns run()'s code. */
    private function runUntil(Daemon $d, callable $done, float $limit = 20.0): int
    {
        $deadline = microtime(true) + $limit;
        $d->every(0.005, function () use ($d, $done, $deadline) {
            if ($done() || microtime(true) > $deadline) {
                $d->stop();
            }
        }, name: 'test-watch');
        return $d->run();
    }

    public function test_a_lane_runs_its_jobs_one_at_a_time_in_order(): void
    {
        $d = $this->daemon();
        foreach (['a', 'b', 'c'] as $name) {
            $d->job($name, function () {
                $start = microtime(true);
                usleep(30000);
                return [$start, microtime(true)];
            });
        }
        $events = [];
        $results = [];
        $d->onJobStart(function (JobRun $r) use (&$events) {
            $events[] = "start {$r->name()}";
        });
        $d->onJobEnd(function (JobRun $r) use (&$events, &$results) {
            $events[] = "end {$r->name()}";
            $results[$r->name()] = $r->result()->value();
        });
        $queued = false;
        $code = $this->runUntil($d, function () use ($d, &$queued, &$results) {
            if (!$queued) {
                $queued = true;
                foreach (['a', 'b', 'c'] as $n) {
                    $this->assertIsInt($d->queue($n));
                }
            }
            return count($results) === 3;
        });
        $this->assertSame(0, $code);
        $this->assertSame(['start a', 'end a', 'start b', 'end b', 'start c', 'end c'], $events);
        $this->assertGreaterThanOrEqual($results['a'][1], $results['b'][0], 'b started after a ended');
        $this->assertGreaterThanOrEqual($results['b'][1], $results['c'][0], 'c started after b ended');
    }

    public function test_parallel_runs_and_other_lanes_run_at_the_same_time(): void
    {
        $d = $this->daemon();
        $d->lane('always');
        $barrier = "$this->dir/barrier";
        mkdir($barrier);
        // Each job arrives at the barrier and waits (bounded) until all four are there: only runs
        // that are alive at the same time can all pass it.
        $job = function () use ($barrier) {
            touch("$barrier/" . getmypid());
            $deadline = microtime(true) + 10;
            while (count(scandir($barrier)) - 2 < 4 && microtime(true) < $deadline) {
                usleep(2000);
            }
            return count(scandir($barrier)) - 2;
        };
        $d->job('p1', $job, parallel: true);
        $d->job('p2', $job, parallel: true);
        $d->job('in-default', $job);
        $d->job('in-always', $job, lane: 'always');
        $ended = [];
        $d->onJobEnd(function (JobRun $r) use (&$ended) {
            $ended[$r->name()] = [$r->result()->outcome(), $r->result()->value(), $r->lane()];
        });
        $asked = false;
        $this->runUntil($d, function () use ($d, &$asked, &$ended) {
            if (!$asked) {
                $asked = true;
                $d->start('p1');
                $d->start('p2');
                $d->queue('in-default');
                $d->queue('in-always');
            }
            return count($ended) === 4;
        });
        ksort($ended);
        $this->assertSame([
            'in-always' => ['ok', 4, 'always'],
            'in-default' => ['ok', 4, 'default'],
            'p1' => ['ok', 4, null],
            'p2' => ['ok', 4, null],
        ], $ended);
    }

    public function test_a_job_still_running_is_not_started_again_and_that_is_recorded(): void
    {
        $d = $this->daemon();
        $gate = "$this->dir/gate";
        $d->job('slow', function () use ($gate) {
            while (!file_exists($gate)) {
                usleep(2000);
            }
            return 'done';
        });
        $starts = 0;
        $ends = 0;
        $d->onJobStart(function () use (&$starts) {
            $starts++;
        });
        $d->onJobEnd(function () use (&$ends) {
            $ends++;
        });
        $step = 0;
        $second = 'unset';
        $third = 'unset';
        $status = null;
        $this->runUntil($d, function () use ($d, &$step, &$starts, &$ends, &$second, &$third, &$status, $gate) {
            switch ($step) {
                case 0:
                    $d->queue('slow');
                    $step = 1;
                    break;
                case 1:
                    if ($starts === 1) {
                        $second = $d->queue('slow');      // running: refused
                        $third = $d->start('slow');       // in parallel too
                        $status = $d->status();
                        touch($gate);
                        $step = 2;
                    }
                    break;
            }
            return $ends === 1;
        });
        $this->assertNull($second);
        $this->assertNull($third);
        $this->assertSame(1, $starts);
        $job = array_values(array_filter($status['jobs'], fn ($j) => $j['name'] === 'slow'))[0];
        $this->assertSame(2, $job['skipped']);
        $this->assertTrue($this->log->contains('job slow not started: still running (pid'), $this->log->text());
        $this->assertTrue($this->log->contains('job slow: 1 more run(s) were not started while it ran'), $this->log->text());
    }

    public function test_events_carry_the_run_and_its_result_whatever_the_job_did(): void
    {
        $d = $this->daemon();
        $d->job('fine', fn () => 42, parallel: true);
        $d->job('throws', function () {
            throw new \RuntimeException('nope');
        }, parallel: true);
        $d->job('fatal', function () {
            set_error_handler(null); // PHPUnit's handler would turn errors into exceptions.
            trigger_error('on the way', E_USER_WARNING);
            trigger_error('the ledger does not balance', E_USER_ERROR);
        }, parallel: true);
        $d->job('killed', fn () => posix_kill(getmypid(), SIGKILL), parallel: true);
        $d->job('late', fn () => sleep(30), parallel: true, timeout: 0.2);
        $starts = [];
        $ends = [];
        $d->onJobStart(function (JobRun $r) use (&$starts) {
            $starts[$r->name()] = [$r->pid(), $r->trigger(), $r->result()];
        });
        $d->onJobEnd(function (JobRun $r) use (&$ends) {
            $ends[$r->name()] = $r;
        });
        $asked = false;
        $this->runUntil($d, function () use ($d, &$asked, &$ends) {
            if (!$asked) {
                $asked = true;
                foreach (['fine', 'throws', 'fatal', 'killed', 'late'] as $j) {
                    $d->start($j);
                }
            }
            return count($ends) === 5;
        });
        $outcomes = array_map(fn (JobRun $r) => $r->result()->outcome(), $ends);
        ksort($outcomes);
        $this->assertSame(
            ['fatal' => 'fatal', 'fine' => 'ok', 'killed' => 'signal', 'late' => 'timeout', 'throws' => 'exception'],
            $outcomes
        );
        $this->assertSame(42, $ends['fine']->result()->value());
        $this->assertSame('nope', $ends['throws']->result()->exception()->message());
        $this->assertCount(1, $ends['fatal']->result()->errors() ? array_filter(
            $ends['fatal']->result()->errors(),
            fn ($e) => $e->message() === 'on the way'
        ) : []);
        foreach ($ends as $name => $r) {
            $this->assertSame($starts[$name][0], $r->pid(), "$name: the same pid at start and end");
            $this->assertSame($r->pid(), $r->result()->pid());
            $this->assertSame('asked', $starts[$name][1]);
            $this->assertNull($starts[$name][2], 'no result at the start');
            $this->assertNull($r->lane());
            $this->assertGreaterThanOrEqual($r->scheduledAt(), $r->startedAt());
        }
        $this->assertTrue($this->log->contains('job fatal (pid'), $this->log->text());
    }

    public function test_sigterm_stops_new_work_and_lets_the_running_job_finish(): void
    {
        $d = $this->daemon();
        $d->job('finishing', function () {
            usleep(300000);
            return 'finished';
        });
        $d->job('queued-behind', fn () => 'must not run');
        $ended = [];
        $started = [];
        $d->onJobStart(function (JobRun $r) use (&$started) {
            $started[] = $r->name();
            // TERM arrives while the job runs.
            posix_kill(getmypid(), SIGTERM);
        });
        $d->onJobEnd(function (JobRun $r) use (&$ended) {
            $ended[$r->name()] = $r->result() === null
                ? 'handed back, never started'
                : $r->result()->outcome() . ' ' . json_encode($r->result()->value());
        });
        $once = false;
        $d->every(0.005, function () use ($d, &$once) {
            if (!$once) {
                $once = true;
                $d->queue('finishing');
                $d->queue('queued-behind');
            }
        });
        $this->assertSame(0, $d->run());
        $this->assertSame(['finishing'], $started);
        $this->assertSame(['queued-behind' => 'handed back, never started', 'finishing' => 'ok "finished"'], $ended);
        $this->assertTrue($this->log->contains('stopping (SIGTERM)'), $this->log->text());
        $this->assertTrue($this->log->contains('run of queued-behind'), $this->log->text());
        $this->assertFileDoesNotExist("$this->dir/test.pid", 'the pid file is removed at a clean stop');
        $this->assertFileDoesNotExist("$this->dir/test.sock");
    }

    public function test_at_the_stop_timeout_running_jobs_are_ended(): void
    {
        $d = $this->daemon(stopTimeout: 0.2);
        $d->job('forever', fn () => sleep(60), parallel: true);
        $result = null;
        $d->onJobStart(fn () => posix_kill(getmypid(), SIGTERM));
        $d->onJobEnd(function (JobRun $r) use (&$result) {
            $result = $r->result();
        });
        $once = false;
        $d->every(0.005, function () use ($d, &$once) {
            if (!$once) {
                $once = true;
                $d->start('forever');
            }
        });
        $this->assertSame(0, $d->run());
        $this->assertSame('timeout', $result->outcome(), (string) $result);
        $this->assertSame(SIGTERM, $result->signal());
        $this->assertTrue($this->log->contains('stop timeout passed: ending 1 run(s)'), $this->log->text());
    }

    public function test_the_application_s_own_signal_handlers_run_from_the_loop(): void
    {
        $d = $this->daemon();
        $got = [];
        $d->on(SIGUSR2, function (int $signo) use (&$got) {
            $got[] = $signo;
        });
        $sent = 0;
        $this->runUntil($d, function () use (&$sent, &$got) {
            if ($sent < 3) {
                $sent++;
                posix_kill(getmypid(), SIGUSR2);
            }
            return count($got) === 3;
        });
        $this->assertSame([SIGUSR2, SIGUSR2, SIGUSR2], $got);
        // Given back: after run() the application's pcntl handler sees the signal again.
        $seen = false;
        pcntl_signal(SIGUSR2, function () use (&$seen) {
            $seen = true;
        });
        posix_kill(getmypid(), SIGUSR2);
        pcntl_signal_dispatch();
        pcntl_signal(SIGUSR2, SIG_DFL);
        $this->assertTrue($seen, 'SIGUSR2 is unblocked after run()');
    }

    public function test_a_callback_that_throws_is_logged_and_the_daemon_goes_on(): void
    {
        $d = $this->daemon();
        $n = 0;
        $d->every(0.005, function () use (&$n) {
            $n++;
            throw new \LogicException("tick $n failed");
        }, name: 'thrower');
        $this->runUntil($d, function () use (&$n) {
            return $n >= 3;
        });
        $this->assertGreaterThanOrEqual(3, $n);
        $this->assertTrue($this->log->contains('timer thrower threw LogicException: tick 1 failed'), $this->log->text());
    }

    public function test_forked_interval_runs_never_overlap(): void
    {
        $d = $this->daemon();
        $d->every(0.01, function () {
            usleep(35000);
        }, name: 'busy', fork: true);
        $intervals = [];
        $d->onJobEnd(function (JobRun $r) use (&$intervals) {
            $intervals[] = [$r->startedAt(), $r->startedAt() + $r->result()->duration()];
        });
        $this->runUntil($d, function () use (&$intervals) {
            return count($intervals) >= 4;
        });
        for ($i = 1; $i < count($intervals); $i++) {
            $this->assertGreaterThanOrEqual($intervals[$i - 1][1] - 0.002, $intervals[$i][0]);
        }
        $this->assertTrue($this->log->contains('job busy not started: still running'), $this->log->text());
    }

    public function test_runs_get_their_arguments_and_label_and_the_app_counts_in_status_and_metrics(): void
    {
        $d = $this->daemon();
        $d->job('handle', fn (array $payload, string $tag) => [$tag, $payload['n'] * 2, cli_get_process_title()], parallel: true, overlap: true);
        $ends = [];
        $stopping = [];
        $d->onStart(function () use ($d, &$stopping) {
            $stopping[] = $d->isStopping();
            foreach ([1, 2, 3] as $n) {
                $d->start('handle', [['n' => $n], "m$n"], label: "App\\Msg$n");
            }
        });
        $d->onJobEnd(function (\Forklift\JobRun $r) use ($d, &$ends) {
            $ends[$r->label()] = $r->result()->value();
            $d->count('messages', ['class' => $r->label(), 'outcome' => 'handled']);
            $d->observe('message', 0.3, ['class' => $r->label()]);
        });
        $status = null;
        $metrics = null;
        $this->assertSame(0, $this->runUntil($d, function () use ($d, &$ends, &$status, &$stopping) {
            if (\count($ends) === 3 && $status === null) {
                $status = $d->status();
                $d->stop();
                $stopping[] = $d->isStopping();
            }
            return false;
        }));
        ksort($ends);
        $this->assertSame([
            'App\\Msg1' => ['m1', 2, 'forklift: test parallel - handle - App\\Msg1'],
            'App\\Msg2' => ['m2', 4, 'forklift: test parallel - handle - App\\Msg2'],
            'App\\Msg3' => ['m3', 6, 'forklift: test parallel - handle - App\\Msg3'],
        ], $ends, 'each child got its own arguments; the label is in its title');
        $this->assertSame([false, true], $stopping);
        $counters = array_map(static fn ($c) => [$c['name'], $c['labels'], $c['count']], $status['counters']);
        $this->assertContains(['messages', [['class', 'App\\Msg2'], ['outcome', 'handled']], 1], $counters);
        $this->assertContains(['message', [['class', 'App\\Msg3']], 1], $counters);
    }

    public function test_counters_refuse_what_would_break_metrics_with_what_to_fix(): void
    {
        $d = $this->daemon();
        foreach ([
            [fn () => $d->count('Bad-Name'), 'must be lower-case letters'],
            [fn () => $d->count('x', [1 => 'a']), '$labels must map label names to values'],
            [fn () => $d->count('x', ['daemon' => 'a']), 'Forklift\'s own'],
            [fn () => $d->count('x', ['a' => []]), 'label a must be a string or an int'],
            [fn () => $d->count('x', by: -1), '$by must be ≥ 0'],
            [fn () => $d->observe('x', -1.0), 'finite number ≥ 0'],
            [fn () => $d->observe('x', NAN), 'finite number ≥ 0'],
            [fn () => [$d->count('y'), $d->observe('y', 1.0)], '"y" is a counter'],
            [fn () => $d->start('nope'), 'no job named "nope"'],
            [fn () => $d->job('j', fn () => 1)->start('j', [], label: ''), '$label is shown in process titles'],
            [fn () => $d->start('j', [], label: str_repeat('x', 201)), '1 to 200 printable characters'],
        ] as [$fn, $message]) {
            try {
                $fn();
                $this->fail("no exception; expected: $message");
            } catch (\Forklift\InvalidArgumentException $e) {
                $this->assertStringContainsString($message, $e->getMessage());
            }
        }
    }

    public function test_a_running_dispatcher_answers_its_status_socket(): void
    {
        $d = $this->daemon();
        $pidFile = "$this->dir/test.pid";
        // The question comes from a job: the dispatcher answers between turns while it runs.
        $d->job('asker', fn () => json_decode(Daemon::query($pidFile, 'status'), true), parallel: true);
        $d->cron('*/5 * * * *', 'five', fn () => null, timezone: 'UTC');
        $answer = null;
        $metrics = null;
        $d->onJobEnd(function (JobRun $r) use (&$answer) {
            $answer = $r->result()->value();
        });
        $asked = false;
        $this->runUntil($d, function () use ($d, &$asked, &$answer) {
            if (!$asked) {
                $asked = true;
                $d->start('asker');
            }
            return $answer !== null;
        });
        $this->assertSame('test', $answer['name']);
        $this->assertSame(getmypid(), $answer['dispatcher']);
        $this->assertSame('asker', $answer['running'][0]['job']);
        $five = array_values(array_filter($answer['jobs'], fn ($j) => $j['name'] === 'five'))[0];
        $this->assertSame('*/5 * * * *', $five['schedule']);
        $this->assertSame(0, ((int) $five['next_run']) % 300, 'next run on a 5-minute boundary');
        $this->assertGreaterThan(time() - 1, $five['next_run']);
        $this->assertLessThanOrEqual(time() + 301, $five['next_run']);
    }

    public function test_the_pid_file_refuses_a_second_daemon_and_names_the_first(): void
    {
        $d = $this->daemon();
        $pidFile = "$this->dir/test.pid";
        $out = null;
        $d->job('second', function () use ($pidFile) {
            $e = new Daemon('test', pidFile: $pidFile);
            try {
                $e->run();
                return 'ran';
            } catch (\Forklift\ForkliftException $ex) {
                return $ex->getMessage();
            }
        }, parallel: true);
        $d->onJobEnd(function (JobRun $r) use (&$out) {
            $out = $r->result()->value();
        });
        $asked = false;
        $this->runUntil($d, function () use ($d, &$asked, &$out) {
            if (!$asked) {
                $asked = true;
                $d->start('second');
            }
            return $out !== null;
        });
        $this->assertStringContainsString('daemon already running as pid ' . getmypid(), $out);
        $this->assertStringContainsString($pidFile, $out);
    }

    public function test_a_pool_owned_by_the_daemon_delivers_results_and_is_drained_at_the_stop(): void
    {
        $d = $this->daemon();
        $pool = new \Forklift\Pool(function (int $n) {
            usleep(20000);
            return $n * 2;
        }, workers: 2, name: 'doubler');
        $d->pool($pool);
        $results = [];
        $pool->onResult(function (\Forklift\JobResult $r) use (&$results) {
            $results[] = $r->value();
        });
        $status = null;
        $submitted = false;
        $d->every(0.005, function () use ($d, $pool, &$submitted, &$results, &$status) {
            if (!$submitted) {
                $submitted = true;
                foreach (range(1, 4) as $n) {
                    $pool->submit($n);
                }
            } elseif (count($results) >= 2 && $status === null) {
                $status = $d->status();
                // Stop with tasks still queued or running: they are drained before run() returns.
                foreach (range(5, 8) as $n) {
                    $pool->submit($n);
                }
                $d->stop();
            }
        });
        $this->assertSame(0, $d->run());
        sort($results);
        $this->assertSame([2, 4, 6, 8, 10, 12, 14, 16], $results);
        $this->assertSame('doubler', $status['pools'][0]['name']);
        $this->assertSame(2, $status['pools'][0]['workers']);
        $this->assertSame(0, $pool->stats()['running']);
        $this->assertSame([], array_filter($pool->stats()['workers'], fn ($w) => $w['state'] !== 'gone'), 'workers shut down');
    }

    /** @return iterable<string, array{0: string, 1: int, 2: string}> */
    public static function endingCallbacks(): iterable
    {
        yield 'exit(3) in onJobEnd' => ['$d->onJobEnd(fn () => exit(3));', 3, 'called exit()'];
        yield 'exit() in a timer' => ['$d->every(0.05, function () { static $n = 0; if ($n++ === 2) exit(4); });', 4, 'called exit()'];
        yield 'memory exhausted in a timer' => [
            '$d->every(0.05, function () { static $n = 0; if ($n++ === 2) { ini_set("memory_limit", "16M"); $x = str_repeat("x", 64 << 20); } });',
            255,
            'died of a fatal error',
        ];
        yield 'exit() in a signal handler' => ['$d->on(SIGUSR2, fn () => exit(5)); $d->every(0.05, fn () => posix_kill(getmypid(), SIGUSR2));', 5, 'called exit()'];
        yield 'exit() in the logger' => ['', 6, 'called exit()'];
    }

    /**
     * @dataProvider endingCallbacks
     * exit() or a fatal error in the dispatcher's own callbacks ends run() the way PHP would end the
     * script (exit code, shutdown functions), after the running jobs are ended and the pid file,
     * socket and signals given back.
     */
    public function test_exit_or_a_fatal_error_in_a_callback_ends_the_daemon_cleanly(string $define, int $code, string $said): void
    {
        $pidFile = "$this->dir/x.pid";
        $logger = $code === 6
            ? 'new class { public $n = 0; public function log($l, $m, $c = []) { if (str_contains($m, "ended: ok") && ++$this->n === 1) exit(6); } }'
            : 'null';
        $php = <<<PHP
        \$d = new Forklift\\Daemon('x', pidFile: '$pidFile', logger: $logger);
        \$d->job('long', function () { file_put_contents('$this->dir/long', getmypid()); sleep(30); }, parallel: true);
        \$d->job('short', fn () => 1, parallel: true);
        \$d->every(0.01, function () use (\$d) { static \$n = 0; if (\$n++ === 0) { \$d->start('long'); \$d->start('short'); } });
        $define
        register_shutdown_function(fn () => print("shutdown ran\\n"));
        \$d->run();
        print("not reached\\n");
        PHP;
        $r = \Forklift\Tests\Support\Subprocess::php($php);
        $this->assertSame($code, $r['status'], $r['out'] . $r['err']);
        $this->assertSame("shutdown ran\n", $r['out'], $r['err']);
        $this->assertStringContainsString($said, $r['err']);
        $this->assertFileDoesNotExist($pidFile);
        $this->assertFileDoesNotExist("$this->dir/x.sock");
        if (file_exists("$this->dir/long")) {
            $this->assertTrue(DaemonKit::waitGone([(int) file_get_contents("$this->dir/long")], 5.0), 'the running job was ended');
        }
    }

    public function test_a_run_that_cannot_start_still_gets_its_on_job_end(): void
    {
        $d = $this->daemon();
        $d->job('unlucky', fn () => 1, parallel: true);
        $fail = true;
        \Forklift\on_fork(prepare: function () use (&$fail) {
            if ($fail) {
                throw new \RuntimeException('no connection to close');
            }
        });
        $ends = [];
        $d->onJobEnd(function (JobRun $r) use (&$ends) {
            $ends[] = [$r->name(), $r->result()?->outcome()];
        });
        $asked = false;
        try {
            $this->runUntil($d, function () use ($d, &$asked, &$ends) {
                if (!$asked) {
                    $asked = true;
                    $d->start('unlucky');
                }
                return $ends !== [];
            });
        } finally {
            $fail = false;
        }
        $this->assertSame([['unlucky', null]], $ends);
        $this->assertTrue($this->log->contains('job unlucky could not start: an on_fork() prepare hook threw: RuntimeException: no connection to close'), $this->log->text());
        $job = array_values(array_filter($d->status()['jobs'], fn ($j) => $j['name'] === 'unlucky'))[0];
        $this->assertSame([['not started', 1]], $job['outcomes']);
    }

    /** @return iterable<string, array{0: callable(Daemon): mixed, 1: string}> */
    public static function badDefinitions(): iterable
    {
        $noop = fn () => null;
        yield 'six cron fields' => [fn (Daemon $d) => $d->cron('* * * * * *', 'x', $noop), 'is not a crontab schedule'];
        yield 'empty cron' => [fn (Daemon $d) => $d->cron('', 'x', $noop), 'is not a crontab schedule'];
        yield 'cron minute 60' => [fn (Daemon $d) => $d->cron('60 * * * *', 'x', $noop), 'is not a crontab schedule'];
        yield 'bogus time zone' => [fn (Daemon $d) => $d->cron('* * * * *', 'x', $noop, timezone: 'Mars/Olympus'), 'is not a time zone'];
        yield 'interval 0' => [fn (Daemon $d) => $d->every(0, $noop), 'from 0.001 to 1e9'];
        yield 'interval negative' => [fn (Daemon $d) => $d->every(-1, $noop), 'from 0.001 to 1e9'];
        yield 'interval NAN' => [fn (Daemon $d) => $d->every(NAN, $noop), 'from 0.001 to 1e9'];
        yield 'interval huge' => [fn (Daemon $d) => $d->every(1e12, $noop), 'from 0.001 to 1e9'];
        yield 'unknown lane' => [fn (Daemon $d) => $d->job('x', $noop, lane: 'nope'), 'unknown lane "nope"; declare it first'];
        yield 'lane and parallel' => [fn (Daemon $d) => $d->job('x', $noop, lane: 'default', parallel: true), 'not both'];
        yield 'duplicate job' => [function (Daemon $d) use ($noop) {
            $d->job('x', $noop);
            $d->cron('* * * * *', 'x', $noop);
        }, 'a job named "x" already exists'];
        yield 'duplicate timer name' => [function (Daemon $d) use ($noop) {
            $d->job('x', $noop);
            $d->every(1, $noop, name: 'x');
        }, 'a job named "x" already exists'];
        yield 'duplicate lane' => [fn (Daemon $d) => $d->lane('default'), 'declared twice'];
        yield 'not callable' => [fn (Daemon $d) => $d->job('x', 'no_such_function_here'), '$fn'];
        yield 'grace without timeout' => [fn (Daemon $d) => $d->job('x', $noop, grace: 1), 'grace: only applies with a timeout:'];
        yield 'missed policy' => [fn (Daemon $d) => $d->cron('* * * * *', 'x', $noop, missed: 'sometimes'), '$missed must be "skip"'];
        yield 'limits on an inline timer' => [fn (Daemon $d) => $d->every(1, $noop, timeout: 5), 'add fork: true'];
        yield 'SIGKILL handler' => [fn (Daemon $d) => $d->on(SIGKILL, $noop), 'SIGKILL cannot be caught'];
        yield 'signal 0' => [fn (Daemon $d) => $d->on(0, $noop), 'is not a signal number'];
        yield 'queue unknown job' => [fn (Daemon $d) => $d->queue('ghost'), 'no job named "ghost"'];
        yield 'pool that is not a pool' => [fn (Daemon $d) => $d->pool(new \stdClass()), 'must be a Forklift\Pool'];
        yield 'empty job name' => [fn (Daemon $d) => $d->job('', $noop), 'a job name must be 1 to 200'];
    }

    /** @dataProvider badDefinitions */
    public function test_a_bad_definition_is_refused_with_a_fix_it_message(callable $define, string $message): void
    {
        $d = $this->daemon();
        try {
            $define($d);
            $this->fail('accepted');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString($message, $e->getMessage());
        }
        $this->assertSame([], array_diff(scandir($this->dir), ['.', '..']), 'nothing left behind');
    }

    /** @return iterable<string, array{0: string, 1: string}> */
    public static function badConstructions(): iterable
    {
        yield 'empty name' => ['', 'must be 1 to 64 letters'];
        yield 'slash in name' => ['a/b', 'must be 1 to 64 letters'];
        yield 'dot first' => ['.hidden', 'must be 1 to 64 letters'];
    }

    /** @dataProvider badConstructions */
    public function test_a_bad_name_is_refused(string $name, string $message): void
    {
        $this->expectException(InvalidArgumentException::class);
        $this->expectExceptionMessage($message);
        new Daemon($name, pidFile: "$this->dir/x.pid");
    }

    public function test_other_bad_options_are_refused(): void
    {
        foreach ([
            [fn () => new Daemon('x', pidFile: ''), '$pidFile is empty'],
            [fn () => new Daemon('x', pidFile: "$this->dir/x.pid", stopTimeout: -1), '$stopTimeout'],
            [fn () => new Daemon('x', pidFile: "$this->dir/x.pid", logger: new \stdClass()), 'PSR-3 logger'],
            [fn () => new Daemon('x', pidFile: "$this->dir/x.pid", restartBurst: 0), 'restartBurst'],
            [fn () => new Daemon('x', pidFile: "$this->dir/x.pid", restartDelay: 10, restartDelayMax: 1), 'restartDelay'],
        ] as [$make, $message]) {
            try {
                $make();
                $this->fail("accepted: $message");
            } catch (InvalidArgumentException $e) {
                $this->assertStringContainsString($message, $e->getMessage());
            }
        }
    }

    public function test_a_symlinked_pid_file_is_refused_before_anything_starts(): void
    {
        file_put_contents("$this->dir/target", 'keep');
        symlink("$this->dir/target", "$this->dir/link.pid");
        $d = new Daemon('x', pidFile: "$this->dir/link.pid", logger: $this->log);
        $ran = false;
        $d->every(0.01, function () use (&$ran) {
            $ran = true;
        });
        try {
            $d->run();
            $this->fail('ran');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString('is a symbolic link', $e->getMessage());
        }
        $this->assertFalse($ran);
        $this->assertSame('keep', file_get_contents("$this->dir/target"));
        $this->assertFileDoesNotExist("$this->dir/link.sock");
    }

    public function test_a_pid_file_in_a_missing_directory_says_what_to_create(): void
    {
        $d = new Daemon('x', pidFile: "$this->dir/no/such/dir/x.pid", logger: $this->log);
        $this->expectException(InvalidArgumentException::class);
        $this->expectExceptionMessage('mkdir -p');
        $d->run();
    }

    public function test_the_definition_cannot_change_while_it_runs_and_run_is_not_reentrant(): void
    {
        $d = $this->daemon();
        $errors = [];
        $this->runUntil($d, function () use ($d, &$errors) {
            foreach ([fn () => $d->job('late', fn () => 1), fn () => $d->lane('late'), fn () => $d->run()] as $f) {
                try {
                    $f();
                } catch (InvalidArgumentException $e) {
                    $errors[] = $e->getMessage();
                }
            }
            return true;
        });
        $this->assertCount(3, $errors);
        $this->assertStringContainsString('before run()', $errors[0]);
        $this->assertStringContainsString('already runs', $errors[2]);
    }
}
