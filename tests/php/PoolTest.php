<?php

declare(strict_types=1);

namespace Forklift\Tests;

use Forklift\JobResult;
use Forklift\Pool;
use Forklift\PoolException;
use Forklift\PoolFullException;
use Forklift\Task;
use Forklift\TimeoutException;
use Forklift\Tests\Support\Procfs;
use PHPUnit\Framework\TestCase;

/**
 * Forklift\Pool with real worker processes: values, inherited state, results as they finish, the
 * bounded queue, shutdown and kill, the start hook, timeouts, the memory cap, workers that die
 * mid-task, retries, crash loops, recycling, stats, process titles, and nothing left behind.
 *
 * Tasks that must stay running block reading a socket pair made before the pool (so every worker
 * inherits it); the test releases them by writing to the other end.
 */
final class PoolTest extends TestCase
{
    private ?Pool $pool = null;
    /** @var list<resource> */
    private array $sockets = [];
    /** @var list<string> */
    private array $files = [];

    protected function tearDown(): void
    {
        // A test that failed half-way may leave a task blocked on a socket, and a pool's destructor
        // runs its accepted tasks to their end: kill the workers first.
        if ($this->pool !== null) {
            $this->pool->kill();
            $this->pool = null;
        }
        foreach ($this->sockets as $socket) {
            if (is_resource($socket)) {
                fclose($socket);
            }
        }
        foreach ($this->files as $file) {
            @unlink($file);
        }
    }

    public function test_a_task_runs_in_a_worker_and_its_value_comes_back(): void
    {
        $pool = $this->pool = new Pool(fn (array $order) => ['total' => array_sum($order), 'pid' => getmypid()], workers: 2);
        $task = $pool->submit([20, 22]);
        $this->assertInstanceOf(Task::class, $task);

        $r = $task->wait();
        $this->assertInstanceOf(JobResult::class, $r);
        $this->assertSame('ok', $r->outcome());
        $this->assertSame(42, $r->value()['total']);
        $this->assertNotSame(getmypid(), $r->value()['pid'], 'the handler ran in a worker, not in the parent');
        $this->assertSame($r->value()['pid'], $r->pid());
        $this->assertContains($r->pid(), array_column($pool->stats()['workers'], 'pid'));
        $this->assertSame(1, $r->attempts());
        $this->assertNull($r->cause());
        $this->assertTrue($task->isDone());
        $this->assertSame($r->value(), $task->wait()->value(), 'a second wait() gives the same result');
    }

    public function test_objects_go_to_the_worker_and_come_back_equal(): void
    {
        $pool = $this->pool = new Pool(fn (\ArrayObject $payload) => [$payload, new \DateTimeImmutable('2020-01-02 03:04:05')], workers: 1);
        $payload = new \ArrayObject(['list' => range(1, 100), 'when' => new \DateTimeImmutable('1999-12-31')]);
        $this->assertEquals([$payload, new \DateTimeImmutable('2020-01-02 03:04:05')], $pool->submit($payload)->wait()->value());
    }

    public function test_workers_inherit_what_the_parent_set_up_before_the_pool_was_made(): void
    {
        $config = ['dsn' => 'mysql:host=db', 'token' => bin2hex(random_bytes(8))];
        $GLOBALS['forklift_pool_test_boot'] = 'before the pool';
        try {
            $pool = $this->pool = new Pool(fn () => [$config, $GLOBALS['forklift_pool_test_boot']], workers: 1);
            // Workers are forked by the constructor: what the parent changes later is its own.
            $GLOBALS['forklift_pool_test_boot'] = 'after the pool';

            $r = $pool->submit(null)->wait();
            $this->assertSame('ok', $r->outcome(), (string) $r->cause());
            $this->assertSame([$config, 'before the pool'], $r->value());
        } finally {
            unset($GLOBALS['forklift_pool_test_boot']);
        }
    }

    public function test_on_result_sees_every_task_exactly_once_in_the_order_they_finish(): void
    {
        [$release, $workerEnd] = $this->socketPair();
        $pool = $this->pool = new Pool(
            fn (int $n) => $n === 0 ? (int) fgets($workerEnd) : $n * 10,
            workers: 2,
        );
        $seen = [];
        $pool->onResult(function (JobResult $r, int $taskId) use (&$seen) {
            $seen[] = [$taskId, $r->outcome(), $r->value()];
        });

        // Task 0 holds one worker until released; tasks 1..20 all run, in order, on the other.
        $slow = $pool->submit(0);
        $fast = [];
        for ($n = 1; $n <= 20; $n++) {
            $fast[$n] = $pool->submit($n);
        }
        foreach ($fast as $task) {
            $task->wait();
        }
        $this->assertFalse($slow->isDone());
        fwrite($release, "7\n");
        $pool->drain();

        $expected = [];
        foreach ($fast as $n => $task) {
            $expected[] = [$task->id(), 'ok', $n * 10];
        }
        $expected[] = [$slow->id(), 'ok', 7];
        $this->assertSame($expected, $seen, 'each task once, as it finished: the held one last');
        $this->assertSame(21, $pool->stats()['completed']);
    }

    public function test_an_on_result_callback_that_throws_reaches_the_caller_and_costs_no_other_task_its_callback(): void
    {
        $pairs = [$this->socketPair(), $this->socketPair(), $this->socketPair()];
        $pool = $this->pool = new Pool(fn (int $n) => trim((string) fgets($pairs[$n][1])), workers: 3);
        $seen = [];
        $pool->onResult(function (JobResult $r, int $taskId) use (&$seen) {
            $seen[] = $taskId;
            if (count($seen) === 1) {
                throw new \LogicException('the log is full');
            }
        });
        $tasks = [$pool->submit(0), $pool->submit(1), $pool->submit(2)];
        $this->runPoolUntil($pool, $tasks[0], fn () => $pool->stats()['running'] === 3, 'all three tasks to run');
        $pids = array_column($pool->stats()['workers'], 'pid');

        // All three finish before the pool's next call, so that their results arrive together. A
        // worker shows "task N" in its title while it runs one, and "idle" once it has sent its end.
        foreach ($pids as $pid) {
            $this->waitForTitle($pid, 'task');
        }
        foreach ($pairs as [$release]) {
            fwrite($release, "go\n");
        }
        foreach ($pids as $pid) {
            $this->waitForTitle($pid, 'idle');
        }
        try {
            $pool->drain();
            $this->fail("the callback's exception was swallowed");
        } catch (\LogicException $e) {
            $this->assertSame('the log is full', $e->getMessage());
        }
        $pool->drain();

        $this->assertEqualsCanonicalizing(array_map(fn (Task $t) => $t->id(), $tasks), $seen, 'every task reached onResult once');
        $this->assertSame(['go', 'go', 'go'], array_map(fn (Task $t) => $t->wait()->value(), $tasks));
    }

    public function test_wait_any_returns_the_key_of_the_first_task_to_finish_without_busy_waiting(): void
    {
        [$release, $workerEnd] = $this->socketPair();
        $pool = $this->pool = new Pool(fn (string $what) => $what === 'slow' ? fgets($workerEnd) : $what, workers: 2);
        $tasks = ['slow' => $pool->submit('slow'), 'fast' => $pool->submit('fast')];

        $this->assertSame('fast', $pool->waitAny($tasks));
        $this->assertFalse($tasks['slow']->isDone());

        $cpu = $this->cpuSeconds();
        $this->assertNull($pool->waitAny(['slow' => $tasks['slow']], 0.3), 'null when nothing finishes in time');
        $this->assertLessThan(0.15, $this->cpuSeconds() - $cpu, 'waiting 0.3 s blocked in poll(2) rather than spinning');

        fwrite($release, "released\n");
        $this->assertSame('slow', $pool->waitAny(['slow' => $tasks['slow']]));
        $this->assertSame("released\n", $tasks['slow']->wait()->value());
        $held = $pool->submit('slow');
        $this->assertSame(8, $pool->waitAny([7 => $held, 8 => $tasks['fast']]), 'an already finished task is returned at once, with its integer key');
        fwrite($release, "again\n");
        $this->assertSame("again\n", $held->wait()->value());
    }

    public function test_a_full_queue_with_block_when_full_false_throws_pool_full_saying_how_to_make_room(): void
    {
        [$release, $workerEnd] = $this->socketPair();
        $pool = $this->pool = new Pool(fn ($x) => $x === 'hold' ? fgets($workerEnd) : $x, workers: 1, queueSize: 2, blockWhenFull: false);
        // Once a task is back, the worker is idle: the next submit hands it over at once.
        $pool->submit('warm up')->wait();
        $held = $pool->submit('hold');
        $queued = [$pool->submit('a'), $pool->submit('b')];

        try {
            $pool->submit('c');
            $this->fail('a third waiting task was accepted by a queue of 2');
        } catch (PoolFullException $e) {
            $this->assertInstanceOf(PoolException::class, $e);
            $this->assertStringContainsString('full', $e->getMessage());
            $this->assertStringContainsString('queueSize', $e->getMessage(), 'the message says what to raise');
            $this->assertStringContainsString('blockWhenFull: true', $e->getMessage(), 'the message names the other way out');
        }
        $this->assertSame(4, $pool->stats()['submitted'], 'the refused task was not accepted');
        $this->assertSame(2, $pool->stats()['queued']);

        fwrite($release, "go\n");
        $pool->drain();
        $this->assertSame("go\n", $held->wait()->value());
        $this->assertSame(['a', 'b'], [$queued[0]->wait()->value(), $queued[1]->wait()->value()]);
    }

    public function test_a_full_queue_with_block_when_full_makes_submit_wait_until_there_is_room(): void
    {
        [$release, $workerEnd] = $this->socketPair();
        $pool = $this->pool = new Pool(fn ($x) => $x === 'hold' ? fgets($workerEnd) : $x, workers: 1, queueSize: 1, blockWhenFull: true);
        $log = [];
        $pool->onResult(function (JobResult $r, int $id) use (&$log) {
            $log[] = "result $id";
        });
        $pool->submit('warm up')->wait();
        $held = $pool->submit('hold');
        $queued = $pool->submit('a');
        $this->assertSame(1, $pool->stats()['queued'], 'the queue is full');

        // Room appears only once the held task ends and the queued one goes to the worker: the
        // next submit has to wait for that.
        fwrite($release, "go\n");
        $last = $pool->submit('b');
        $log[] = 'submit returned';

        $before = array_slice($log, 0, (int) array_search('submit returned', $log, true));
        $this->assertContains("result {$held->id()}", $before, 'submit() waited until the held task had ended');
        $this->assertTrue($held->isDone());
        $pool->drain();
        $this->assertSame(['a', 'b'], [$queued->wait()->value(), $last->wait()->value()]);
    }

    public function test_shutdown_lets_the_running_task_finish_and_hands_back_those_that_never_started(): void
    {
        [$release, $workerEnd] = $this->socketPair();
        $pool = $this->pool = new Pool(fn ($x) => $x === 'hold' ? fgets($workerEnd) : $x, workers: 1);
        $worker = $pool->submit('warm up')->wait()->pid();
        $held = $pool->submit('hold');
        $queued = [$pool->submit(['mail' => 1]), $pool->submit(['mail' => 2]), $pool->submit(['mail' => 3])];

        // The worker may finish now, but only a pool call hands out the next task, and shutdown()
        // takes the queue back first.
        fwrite($release, "finished\n");
        $back = $pool->shutdown();

        $this->assertSame([
            $queued[0]->id() => ['mail' => 1],
            $queued[1]->id() => ['mail' => 2],
            $queued[2]->id() => ['mail' => 3],
        ], $back);
        $this->assertSame('ok', $held->wait()->outcome(), 'the running task was let finish');
        $this->assertSame("finished\n", $held->wait()->value());
        $this->assertSame([], $pool->stats()['workers']);
        $this->assertFalse(file_exists("/proc/$worker"), 'the worker has left and been reaped');

        try {
            $pool->submit('late');
            $this->fail('a shut-down pool accepted a task');
        } catch (PoolException $e) {
            $this->assertStringContainsString('shut down', $e->getMessage());
        }
    }

    public function test_waiting_for_a_task_that_shutdown_handed_back_throws_pool_exception(): void
    {
        [$release, $workerEnd] = $this->socketPair();
        $pool = $this->pool = new Pool(fn ($x) => $x === 'hold' ? fgets($workerEnd) : $x, workers: 1);
        $pool->submit('warm up')->wait();
        $pool->submit('hold');
        $handedBack = $pool->submit('never started');
        fwrite($release, "finished\n");
        $this->assertSame([$handedBack->id() => 'never started'], $pool->shutdown());

        // Asked in a child with a deadline, so that a wait() that never returns fails this test
        // instead of hanging the suite.
        $r = \Forklift\fork(function () use ($handedBack) {
            try {
                $handedBack->wait();
                return 'wait() returned';
            } catch (\Throwable $e) {
                return get_class($e);
            }
        }, timeout: 2.0)->wait();
        $this->assertSame('ok', $r->outcome(), 'wait() on a handed-back task never returned: ' . $r->cause());
        $this->assertSame(PoolException::class, $r->value());
    }

    public function test_kill_ends_the_running_task_with_a_signal_and_hands_back_the_queued_ones(): void
    {
        [, $workerEnd] = $this->socketPair();
        $pool = $this->pool = new Pool(fn ($x) => $x === 'hold' ? fgets($workerEnd) : $x, workers: 1);
        $worker = $pool->submit('warm up')->wait()->pid();
        $held = $pool->submit('hold');
        $queued = [$pool->submit('a'), $pool->submit('b')];

        $back = $pool->kill();

        $this->assertSame([$queued[0]->id() => 'a', $queued[1]->id() => 'b'], $back);
        $r = $held->wait();
        $this->assertSame('signal', $r->outcome());
        $this->assertSame('SIGKILL', $r->signalName());
        $this->assertSame($worker, $r->pid());
        $this->assertSame([], $pool->stats()['workers']);
        $this->assertFalse(file_exists("/proc/$worker"), 'the worker is dead and reaped');
    }

    public function test_on_worker_start_runs_once_in_each_worker_with_its_number(): void
    {
        [$parentEnd, $workerEnd] = $this->socketPair();
        $pool = $this->pool = new Pool(
            fn () => [getmypid(), $GLOBALS['forklift_pool_test_worker']],
            workers: 3,
            onWorkerStart: function (int $number) use ($workerEnd) {
                $starts = ($GLOBALS['forklift_pool_test_worker']['starts'] ?? 0) + 1;
                $GLOBALS['forklift_pool_test_worker'] = ['number' => $number, 'starts' => $starts];
                fwrite($workerEnd, "$number " . getmypid() . "\n");
            },
        );
        $numberOf = [];
        foreach ($pool->stats()['workers'] as $w) {
            $numberOf[$w['pid']] = $w['number'];
        }
        // The hooks run in the new workers without the parent's help: read what each reported.
        $reported = [];
        for ($i = 0; $i < 3; $i++) {
            [$number, $pid] = array_map('intval', explode(' ', trim((string) fgets($parentEnd))));
            $reported[$pid] = $number;
        }
        ksort($numberOf);
        ksort($reported);
        $this->assertSame($numberOf, $reported, 'each worker reported its own number');
        $this->assertEqualsCanonicalizing([1, 2, 3], array_values($reported));

        $tasks = [];
        for ($i = 0; $i < 12; $i++) {
            $tasks[] = $pool->submit($i);
        }
        foreach ($tasks as $task) {
            [$pid, $seen] = $task->wait()->value();
            $this->assertSame(['number' => $numberOf[$pid], 'starts' => 1], $seen, "worker $pid ran its hook once, before its tasks");
        }
        $this->assertArrayNotHasKey('forklift_pool_test_worker', $GLOBALS, 'the hook never ran in the parent');
    }

    public function test_a_task_past_its_timeout_is_stopped_and_its_worker_replaced_while_a_sibling_runs_undisturbed(): void
    {
        [$hangStarted, $siblingListens] = $this->socketPair();
        $pool = $this->pool = new Pool(function (string $what) use ($hangStarted, $siblingListens) {
            if ($what === 'hang') {
                set_error_handler(null);
                trigger_error('hanging now', E_USER_NOTICE);
                fwrite($hangStarted, "hanging\n");
                sleep(60);
            }
            if ($what === 'sibling') {
                // Runs, on the other worker, only while the hanging task is running.
                return [getmypid(), trim((string) fgets($siblingListens))];
            }
            return getmypid();
        }, workers: 2, timeout: 0.5, grace: 0.2);

        $hang = $pool->submit('hang');
        $sibling = $pool->submit('sibling');
        $s = $sibling->wait();
        $this->assertSame('ok', $s->outcome(), (string) $s->cause());
        [$siblingWorker, $heard] = $s->value();
        $this->assertSame('hanging', $heard, 'the sibling ran while the other task hung');

        $r = $hang->wait();
        $this->assertSame('timeout', $r->outcome());
        $this->assertTrue($r->timedOut());
        $this->assertStringContainsString('timed out after 0.5 s', $r->cause());
        $this->assertSame(['hanging now'], array_map(fn ($e) => $e->message(), $r->errors()), 'records raised before the timeout are kept');
        $this->assertFalse(file_exists("/proc/{$r->pid()}"), 'the timed-out worker is dead and reaped');
        $this->assertSame(1, $pool->stats()['timedOut']);
        $this->assertSame(1, $pool->stats()['failed'], 'only the hung task failed');

        $this->assertSame('idle', $this->workerOfPid($pool, $siblingWorker)['state'], "the sibling's worker lives on, untouched by the other's SIGTERM");
        $this->assertSame(1, $this->workerOfPid($pool, $siblingWorker)['tasksDone']);
        $after = [$pool->submit('a'), $pool->submit('b'), $pool->submit('c')];
        foreach ($after as $task) {
            $this->assertSame('ok', $task->wait()->outcome());
            $this->assertNotSame($r->pid(), $task->wait()->value());
        }
        $this->assertCount(2, $pool->stats()['workers'], 'the timed-out worker was replaced');
        $this->assertContains($siblingWorker, array_column($pool->stats()['workers'], 'pid'));
    }

    public function test_soft_timeout_throws_timeout_exception_inside_the_handler_which_may_catch_it(): void
    {
        $pool = $this->pool = new Pool(function (string $what) {
            if ($what === 'spin') {
                while (true) {
                    usleep(1000);
                }
            }
            if ($what === 'catch') {
                try {
                    while (true) {
                        usleep(1000);
                    }
                } catch (TimeoutException $e) {
                    return 'rolled back';
                }
            }
            return getmypid();
        }, workers: 1, softTimeout: 0.2);

        $r = $pool->submit('spin')->wait();
        $this->assertSame('timeout', $r->outcome());
        $this->assertTrue($r->timedOut());
        $this->assertSame(TimeoutException::class, $r->exception()->className());

        $caught = $pool->submit('catch')->wait();
        $this->assertSame('ok', $caught->outcome(), (string) $caught->cause());
        $this->assertSame('rolled back', $caught->value());

        // The deadline was kept inside the worker, which therefore lives on.
        $this->assertSame($r->pid(), $pool->submit('pid')->wait()->value());
    }

    public function test_a_task_over_the_memory_limit_ends_with_oom_and_the_next_task_is_fine(): void
    {
        $pool = $this->pool = new Pool(function (string $what) {
            if ($what === 'hog') {
                $big = str_repeat('x', 64 << 20);
                return strlen($big);
            }
            return [getmypid(), ini_get('memory_limit')];
        }, workers: 1, memoryLimit: '32M');
        $parentLimit = ini_get('memory_limit');

        $r = $pool->submit('hog')->wait();
        $this->assertSame('oom', $r->outcome());
        $this->assertStringContainsString('exceeded the memory limit of 32 MB', $r->cause());
        $this->assertStringContainsString('Allowed memory size of 33554432 bytes exhausted', $r->fatalError()->message());
        $this->assertSame(1, $pool->stats()['oom']);

        $next = $pool->submit('small')->wait();
        $this->assertSame('ok', $next->outcome(), (string) $next->cause());
        [$pid, $limit] = $next->value();
        $this->assertNotSame($r->pid(), $pid, 'the worker that ran out of memory was replaced');
        $this->assertSame(32 << 20, $this->bytes($limit), 'the new worker has the limit too');
        $this->assertSame($parentLimit, ini_get('memory_limit'), "the parent's limit is its own");
    }

    /** @return iterable<string, array{string, string, string}> */
    public static function deaths(): iterable
    {
        yield 'SIGKILL' => ['kill', 'signal', 'killed by signal 9 (SIGKILL)'];
        yield 'SIGSEGV' => ['segv', 'signal', 'killed by signal 11 (SIGSEGV)'];
        yield 'fatal E_USER_ERROR' => ['fatal', 'fatal', 'fatal error: the ledger does not balance'];
        yield 'exit(3)' => ['exit', 'exit', 'exited with code 3'];
    }

    /** @dataProvider deaths */
    public function test_a_worker_that_dies_mid_task_gives_that_task_the_true_cause_and_its_records(string $how, string $outcome, string $cause): void
    {
        $pool = $this->pool = new Pool(function (string $how) {
            if ($how === 'live') {
                return getmypid();
            }
            set_error_handler(null); // PHPUnit's handler, inherited, would turn these into exceptions.
            trigger_error("about to $how", E_USER_WARNING);
            match ($how) {
                'kill' => posix_kill(getmypid(), SIGKILL),
                'segv' => posix_kill(getmypid(), SIGSEGV),
                'fatal' => trigger_error('the ledger does not balance', E_USER_ERROR),
                'exit' => exit(3),
            };
            return 'still alive';
        }, workers: 2);
        $workersBefore = array_column($pool->stats()['workers'], 'pid');

        $r = $pool->submit($how)->wait();

        $this->assertSame($outcome, $r->outcome());
        $this->assertStringContainsString($cause, $r->cause());
        $this->assertSame("about to $how", $r->errors()[0]->message(), 'the record raised before dying arrived');
        $this->assertSame(E_USER_WARNING, $r->errors()[0]->level());
        $this->assertFalse(file_exists("/proc/{$r->pid()}"), 'the dead worker was reaped');

        $after = [];
        for ($i = 0; $i < 4; $i++) {
            $next = $pool->submit('live')->wait();
            $this->assertSame('ok', $next->outcome());
            $after[] = $next->value();
        }
        $this->assertNotContains($r->pid(), $after);
        $survivor = array_values(array_diff($workersBefore, [$r->pid()]));
        $this->assertSame($survivor, array_values(array_intersect($survivor, array_column($pool->stats()['workers'], 'pid'))), 'the other worker never noticed');
        $this->assertCount(2, $pool->stats()['workers'], 'the dead worker was replaced');
        $this->assertSame(1, $pool->stats()['crashed'], 'the death is counted');
    }

    public function test_a_task_whose_worker_always_crashes_is_tried_retries_plus_one_times_on_fresh_workers(): void
    {
        $log = $this->tempFile();
        $pool = $this->pool = new Pool(function () use ($log) {
            file_put_contents($log, getmypid() . "\n", FILE_APPEND);
            posix_kill(getmypid(), SIGKILL);
        }, workers: 1, retries: 2);

        $r = $pool->submit('poison')->wait();

        $this->assertSame('signal', $r->outcome());
        $this->assertSame('SIGKILL', $r->signalName(), 'the last crash is the cause');
        $this->assertSame(3, $r->attempts());
        $pids = file($log, FILE_IGNORE_NEW_LINES);
        $this->assertCount(3, $pids);
        $this->assertCount(3, array_unique($pids), 'each attempt ran on a fresh worker');
        $this->assertSame(2, $pool->stats()['retried']);
        $this->assertSame(3, $pool->stats()['crashed']);
        $this->assertSame(1, $pool->stats()['failed'], 'one task failed, once');
    }

    public function test_a_task_that_crashes_only_on_its_first_attempt_succeeds_on_the_retry(): void
    {
        $marker = $this->tempFile();
        unlink($marker);
        $pool = $this->pool = new Pool(function () use ($marker) {
            if (!file_exists($marker)) {
                touch($marker);
                posix_kill(getmypid(), SIGKILL);
            }
            return 'second time lucky';
        }, workers: 1, retries: 1);

        $r = $pool->submit('flaky')->wait();

        $this->assertSame('ok', $r->outcome(), (string) $r->cause());
        $this->assertSame('second time lucky', $r->value());
        $this->assertSame(2, $r->attempts());
        $this->assertSame(1, $pool->stats()['retried']);
        $this->assertSame(1, $pool->stats()['completed']);
    }

    public function test_a_task_that_throws_is_not_retried_and_its_worker_lives_on(): void
    {
        $pool = $this->pool = new Pool(function (string $what) {
            if ($what === 'throw') {
                throw new \DomainException('no such customer');
            }
            return getmypid();
        }, workers: 1, retries: 2);

        $r = $pool->submit('throw')->wait();

        $this->assertSame('exception', $r->outcome());
        $this->assertSame(\DomainException::class, $r->exception()->className());
        $this->assertSame(1, $r->attempts());
        $this->assertSame($r->pid(), $pool->submit('pid')->wait()->value());
        $this->assertSame(0, $pool->stats()['retried']);
        $this->assertSame(0, $pool->stats()['crashed']);
    }

    public function test_workers_that_die_at_start_stop_the_pool_with_pool_exception_naming_the_cause(): void
    {
        $pool = $this->pool = new Pool(fn ($x) => $x, workers: 2, onWorkerStart: function () {
            throw new \RuntimeException('no db');
        });
        $results = [];
        $pool->onResult(function (JobResult $r, int $id) use (&$results) {
            $results[$id] = $r;
        });
        $task = $pool->submit('never runs');

        // The task is failed visibly, not dropped: its result carries the pool's PoolException.
        $r = $task->wait();
        $this->assertSame('exception', $r->outcome());
        $this->assertSame(PoolException::class, $r->exception()->className());
        $this->assertStringContainsString('no db', $r->exception()->message());
        $this->assertSame([$task->id()], array_keys($results), 'onResult heard of it too');

        try {
            $pool->submit('later');
            $this->fail('a stopped pool accepted a task');
        } catch (PoolException $e) {
            $this->assertStringContainsString('no db', $e->getMessage());
            $this->assertStringContainsString('RuntimeException', $e->getMessage());
        }
        $this->expectException(PoolException::class);
        $this->expectExceptionMessage('no db');
        $pool->drain();
    }

    public function test_max_jobs_recycles_a_worker_after_that_many_tasks(): void
    {
        $pool = $this->pool = new Pool(fn () => getmypid(), workers: 1, maxJobs: 3);
        $tasks = [];
        for ($i = 0; $i < 7; $i++) {
            $tasks[] = $pool->submit($i);
        }
        $pids = array_map(fn (Task $t) => $t->wait()->value(), $tasks);

        $perWorker = array_count_values($pids);
        $this->assertGreaterThanOrEqual(3, count($perWorker), 'at least three workers took turns');
        $this->assertLessThanOrEqual(3, max($perWorker), 'no worker ran more than maxJobs tasks');
        $this->assertGreaterThanOrEqual(2, $pool->stats()['recycled']);
        $this->assertSame(0, $pool->stats()['crashed'], 'recycling is not crashing');
    }

    public function test_max_memory_below_every_workers_size_gives_each_task_a_new_worker(): void
    {
        $pool = $this->pool = new Pool(fn () => getmypid(), workers: 2, maxMemory: '1M');
        $tasks = [];
        for ($i = 0; $i < 4; $i++) {
            $tasks[] = $pool->submit($i);
        }
        $pids = array_map(fn (Task $t) => $t->wait()->value(), $tasks);

        $this->assertCount(4, array_unique($pids), 'every worker was over 1M after its task and left');
        // The first two had to leave for the last two to start; those may still be leaving.
        $this->assertGreaterThanOrEqual(2, $pool->stats()['recycled']);
        $this->assertSame(0, $pool->stats()['crashed']);
    }

    public function test_ttl_recycles_a_worker_only_after_its_running_task_ends(): void
    {
        [$release, $workerEnd] = $this->socketPair();
        $pool = $this->pool = new Pool(fn ($x) => $x === 'hold' ? [getmypid(), fgets($workerEnd)] : getmypid(), workers: 1, ttl: 0.2);
        $held = $pool->submit('hold');
        $this->runPoolUntil($pool, $held, fn () => $this->workerOf($pool, $held) !== null, 'the held task to start');
        $worker = $this->workerOf($pool, $held)['pid'];

        // Let the worker's ttl pass while its task runs: nothing may interrupt it.
        $this->assertNull($pool->waitAny([$held], 0.5));
        $this->assertSame($worker, $this->workerOf($pool, $held)['pid']);
        fwrite($release, "done\n");
        $r = $held->wait();

        $this->assertSame('ok', $r->outcome(), (string) $r->cause());
        $this->assertSame([$worker, "done\n"], $r->value());
        $this->assertNotSame($worker, $pool->submit('next')->wait()->value(), 'past its ttl, the worker left after its task');
        $this->assertGreaterThanOrEqual(1, $pool->stats()['recycled']);
    }

    public function test_idle_ttl_replaces_a_worker_that_sat_idle_while_a_busy_one_is_left_alone(): void
    {
        [$release, $workerEnd] = $this->socketPair();
        $pool = $this->pool = new Pool(fn ($x) => $x === 'hold' ? [getmypid(), fgets($workerEnd)] : getmypid(), workers: 2, idleTtl: 0.1);
        $held = $pool->submit('hold');
        $idlePid = null;
        $this->runPoolUntil($pool, $held, function () use ($pool, $held, &$idlePid) {
            foreach ($pool->stats()['workers'] as $w) {
                if ($w['state'] === 'idle') {
                    $idlePid = $w['pid'];
                }
            }
            return $this->workerOf($pool, $held) !== null && $idlePid !== null;
        }, 'one worker busy with the held task and one idle');
        $busyPid = $this->workerOf($pool, $held)['pid'];

        $this->runPoolUntil($pool, $held, fn () => !file_exists("/proc/$idlePid"), "idle worker $idlePid to leave");
        $this->runPoolUntil($pool, $held, fn () => count($pool->stats()['workers']) === 2, 'its replacement');

        $this->assertNotContains($idlePid, array_column($pool->stats()['workers'], 'pid'));
        $this->assertGreaterThanOrEqual(1, $pool->stats()['recycled']);
        $this->assertSame(0, $pool->stats()['crashed']);
        fwrite($release, "done\n");
        $this->assertSame([$busyPid, "done\n"], $held->wait()->value(), 'the busy worker ran its task to the end');
    }

    public function test_stats_show_each_worker_and_the_pool_counters(): void
    {
        [$release, $workerEnd] = $this->socketPair();
        $pool = $this->pool = new Pool(fn ($x) => $x === 'hold' ? fgets($workerEnd) : $x, workers: 2);
        $warm = $pool->submit('warm up');
        $warm->wait();
        $held = $pool->submit('hold');
        $this->runPoolUntil($pool, $held, fn () => $this->workerOf($pool, $held) !== null, 'the held task to start');
        $this->runPoolUntil($pool, $held, fn () => in_array('idle', array_column($pool->stats()['workers'], 'state'), true), 'the other worker to be ready');

        $stats = $pool->stats();
        $this->assertSame(
            ['workers', 'queued', 'running', 'submitted', 'completed', 'failed', 'timedOut', 'oom', 'recycled', 'crashed', 'retried'],
            array_keys($stats)
        );
        $this->assertCount(2, $stats['workers']);
        foreach ($stats['workers'] as $w) {
            $this->assertSame(['number', 'pid', 'state', 'tasksDone', 'rss', 'task', 'taskAge'], array_keys($w));
            $this->assertTrue(file_exists("/proc/{$w['pid']}"));
            $this->assertIsInt($w['rss']);
        }
        $busy = $this->workerOf($pool, $held);
        $this->assertSame('busy', $busy['state']);
        $this->assertSame($held->id(), $busy['task']);
        $this->assertIsFloat($busy['taskAge']);
        $this->assertGreaterThanOrEqual(0.0, $busy['taskAge']);
        $idle = array_values(array_filter($stats['workers'], fn ($w) => $w['state'] === 'idle'))[0];
        $this->assertNull($idle['task']);
        $this->assertNull($idle['taskAge']);
        $this->assertEqualsCanonicalizing([1, 2], array_column($stats['workers'], 'number'));
        $this->assertSame(1, array_sum(array_column($stats['workers'], 'tasksDone')), 'the warm-up task');
        unset($stats['workers']);
        $this->assertSame(
            ['queued' => 0, 'running' => 1, 'submitted' => 2, 'completed' => 1, 'failed' => 0, 'timedOut' => 0, 'oom' => 0, 'recycled' => 0, 'crashed' => 0, 'retried' => 0],
            $stats
        );

        fwrite($release, "go\n");
        $held->wait();
        $stats = $pool->stats();
        $this->assertSame(0, $stats['running']);
        $this->assertSame(2, $stats['completed']);
        $this->assertSame(2, array_sum(array_column($stats['workers'], 'tasksDone')));
        $this->assertGreaterThan(0, $this->workerOfPid($pool, $busy['pid'])['rss'], 'rss is measured after a task');
    }

    public function test_worker_process_titles_show_the_pool_name_the_worker_number_and_the_task(): void
    {
        $pool = $this->pool = new Pool(fn () => [getmypid(), (string) file_get_contents('/proc/self/cmdline')], workers: 2, name: 'mailer');
        $task = $pool->submit('look');
        [$pid, $title] = $task->wait()->value();
        $number = $this->workerOfPid($pool, $pid)['number'];

        $this->assertStringContainsString("forklift: mailer #$number task {$task->id()}", $title);
        // A worker names itself before it says it is ready; one still starting may not have yet.
        $ready = array_filter($pool->stats()['workers'], fn ($w) => in_array($w['state'], ['idle', 'busy'], true));
        $this->assertContains($pid, array_column($ready, 'pid'));
        foreach ($ready as $w) {
            $this->assertStringContainsString("forklift: mailer #{$w['number']}", (string) file_get_contents("/proc/{$w['pid']}/cmdline"));
        }
    }

    public function test_a_pool_dropped_with_tasks_still_waiting_runs_them_all(): void
    {
        $dir = $this->tempFile();
        unlink($dir);
        mkdir($dir);
        $pool = new Pool(fn (int $n) => touch("$dir/$n"), workers: 2);
        for ($n = 0; $n < 10; $n++) {
            $pool->submit($n);
        }
        unset($pool);

        $done = array_diff(scandir($dir), ['.', '..']);
        array_map('unlink', array_map(fn ($f) => "$dir/$f", $done));
        rmdir($dir);
        $this->assertEqualsCanonicalizing(array_map('strval', range(0, 9)), array_values($done), 'an accepted task is never dropped');
    }

    public function test_nothing_is_left_behind_after_shutdown(): void
    {
        $zombiesBefore = Procfs::zombieChildren();
        $pool = $this->pool = new Pool(function (string $what) {
            if ($what === 'die') {
                posix_kill(getmypid(), SIGKILL);
            }
            return getmypid();
        }, workers: 3, maxJobs: 2);
        $pids = array_column($pool->stats()['workers'], 'pid');
        $tasks = [];
        foreach (['a', 'die', 'b', 'c', 'die', 'd', 'e', 'f'] as $what) {
            $tasks[] = $pool->submit($what);
        }
        foreach ($tasks as $task) {
            $r = $task->wait();
            $pids[] = $r->pid();
        }
        $pids = array_merge($pids, array_column($pool->stats()['workers'], 'pid'));

        $this->assertSame([], $pool->shutdown());

        $this->assertSame([], $pool->stats()['workers']);
        foreach (array_unique($pids) as $pid) {
            $stat = Procfs::stat($pid);
            $this->assertTrue($stat === null || $stat['ppid'] !== getmypid(), "worker $pid is gone and reaped");
            $this->assertStringNotContainsString('forklift: pool', (string) @file_get_contents("/proc/$pid/cmdline"), "worker $pid is not orphaned");
        }
        $this->assertSame($zombiesBefore, Procfs::zombieChildren(), 'no new zombie children');
    }

    /** Both ends of a new socket pair; make it before the pool so that its workers inherit it. */
    private function socketPair(): array
    {
        $pair = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
        $this->assertIsArray($pair);
        array_push($this->sockets, ...$pair);
        return $pair;
    }

    private function tempFile(): string
    {
        $file = tempnam(sys_get_temp_dir(), 'forklift-pool-');
        $this->files[] = $file;
        return $file;
    }

    /**
     * Lets the pool work until `$condition` holds: each round blocks in the pool's own poll(2) on
     * its workers and timers (waitAny on `$pending`, a task that has not finished), so the pool
     * hands out tasks, reaps and replaces workers; the short timeout is only there to look at the
     * condition again, which the pool cannot wait on. Fails after `$seconds`.
     */
    private function runPoolUntil(Pool $pool, Task $pending, callable $condition, string $what, float $seconds = 5.0): void
    {
        $deadline = microtime(true) + $seconds;
        while (!$condition()) {
            if (microtime(true) > $deadline) {
                $this->fail("gave up after $seconds s waiting for $what; stats: " . json_encode($pool->stats()));
            }
            $this->assertFalse($pending->isDone(), "the pending task finished while waiting for $what");
            $pool->waitAny([$pending], 0.05);
        }
    }

    /**
     * Waits, outside any pool call, until worker `$pid`'s process title contains `$word`. A title is
     * memory of the worker, not a file descriptor: this looks at /proc, pausing a millisecond
     * between looks rather than spinning, and fails after 5 s.
     */
    private function waitForTitle(int $pid, string $word): void
    {
        $deadline = microtime(true) + 5.0;
        while (!str_contains((string) @file_get_contents("/proc/$pid/cmdline"), $word)) {
            if (microtime(true) > $deadline) {
                $this->fail("worker $pid never showed '$word' in its title");
            }
            usleep(1000);
        }
    }

    /** @return array{number: int, pid: int, state: string, tasksDone: int, rss: int, task: ?int, taskAge: ?float}|null */
    private function workerOf(Pool $pool, Task $task): ?array
    {
        foreach ($pool->stats()['workers'] as $w) {
            if ($w['task'] === $task->id()) {
                return $w;
            }
        }
        return null;
    }

    private function workerOfPid(Pool $pool, int $pid): array
    {
        foreach ($pool->stats()['workers'] as $w) {
            if ($w['pid'] === $pid) {
                return $w;
            }
        }
        $this->fail("no worker with pid $pid in stats()");
    }

    private function cpuSeconds(): float
    {
        $u = getrusage();
        return $u['ru_utime.tv_sec'] + $u['ru_utime.tv_usec'] / 1e6 + $u['ru_stime.tv_sec'] + $u['ru_stime.tv_usec'] / 1e6;
    }

    private function bytes(string $ini): int
    {
        $units = ['K' => 1 << 10, 'M' => 1 << 20, 'G' => 1 << 30];
        $unit = strtoupper(substr($ini, -1));
        return isset($units[$unit]) ? (int) $ini * $units[$unit] : (int) $ini;
    }

    public function test_with_prefetch_tasks_behind_a_crashed_one_go_back_to_the_queue_and_run(): void
    {
        $pool = $this->pool = new Pool(function (string $what) {
            if ($what === 'crash') {
                posix_kill(getmypid(), SIGKILL);
            }
            return $what . ':' . getmypid();
        }, workers: 1, prefetch: 4);
        $warm = $pool->submit('warm')->wait();
        $tasks = [$pool->submit('crash'), $pool->submit('a'), $pool->submit('b'), $pool->submit('c')];
        $this->assertSame('signal', $tasks[0]->wait()->outcome());
        foreach (array_slice($tasks, 1) as $t) {
            $r = $t->wait();
            $this->assertSame('ok', $r->outcome());
            $this->assertSame(1, $r->attempts(), 'a prefetched task that never began is not a retry');
        }
        $this->assertStringStartsWith('a:', $tasks[1]->wait()->value());
        $this->assertNotSame(explode(':', $warm->value())[1], explode(':', $tasks[1]->wait()->value())[1], 'they ran on the new worker');
    }

    public function test_kill_hands_back_prefetched_tasks_that_had_not_begun(): void
    {
        [$release, $workerEnd] = $this->socketPair();
        $pool = new Pool(fn (string $what) => $what === 'block' ? fgets($workerEnd) : $what, workers: 1, prefetch: 3);
        $pool->submit('warm')->wait();
        $blocked = $pool->submit('block');
        $behind = [$pool->submit('x'), $pool->submit('y')];
        $this->runPoolUntil($pool, $blocked, fn () => $pool->stats()['running'] === 1, 'the blocking task to run');
        $back = $pool->kill();
        $this->assertSame('signal', $blocked->wait()->outcome());
        $this->assertSame(['x', 'y'], array_values($back));
        $this->assertSame([$behind[0]->id(), $behind[1]->id()], array_keys($back));
        fclose($release);
    }

    public function test_a_forked_job_cannot_use_its_parents_pool_and_leaves_it_alone(): void
    {
        $pool = $this->pool = new Pool(fn ($x) => $x, workers: 1);
        $r = \Forklift\fork(function () use ($pool) {
            try {
                $pool->submit(1);
                return 'submitted';
            } catch (\Forklift\ForkliftException $e) {
                unset($pool); // must not stop the parent's workers either
                return $e->getMessage();
            }
        })->wait();
        $this->assertStringContainsString('a forked job or worker cannot use its parent\'s pool', (string) $r->value());
        $this->assertSame(9, $pool->submit(9)->wait()->value(), 'the parent\'s pool still works');
    }

    public function test_a_plain_fork_wait_does_not_take_the_pools_messages(): void
    {
        $pool = $this->pool = new Pool(fn ($x) => $x * 3, workers: 1);
        $task = $pool->submit(2);
        $this->assertSame(5, \Forklift\fork(fn () => 5)->wait()->value());
        $this->assertSame(0, $pool->waitAny([$task], 10.0), 'the task ran though a plain wait came first');
        $this->assertSame(6, $task->wait()->value());
    }

    public function test_a_deadline_holds_while_big_prefetched_payloads_wait_behind_a_stuck_task(): void
    {
        $pool = $this->pool = new Pool(
            fn ($x) => $x === 'stuck' ? sleep(30) : strlen($x),
            workers: 1, prefetch: 3, timeout: 0.5, grace: 0.2
        );
        $started = hrtime(true);
        $stuck = $pool->submit('stuck');
        $big = [$pool->submit(str_repeat('x', 1 << 20)), $pool->submit(str_repeat('y', 1 << 20))];
        $this->assertSame('timeout', $stuck->wait()->outcome());
        $this->assertLessThan(10.0, (hrtime(true) - $started) / 1e9, 'the parent kept the deadline instead of blocking on a write');
        foreach ($big as $t) {
            $this->assertSame(1 << 20, $t->wait()->value());
        }
    }

    public function test_fork_hooks_run_around_worker_forks_and_in_each_worker(): void
    {
        $prepared = 0;
        \Forklift\on_fork(
            prepare: function () use (&$prepared) { $prepared++; },
            // Runs in each new worker, before its first task; what it sets there is that worker's
            // own, so the two workers cannot overwrite each other's mark (a shared file could).
            child: function () { $GLOBALS['forklift_pool_test_child_hook'] = getmypid(); }
        );
        $pool = $this->pool = new Pool(
            fn () => ['hook ran in' => $GLOBALS['forklift_pool_test_child_hook'] ?? null, 'task ran in' => getmypid()],
            workers: 2,
        );
        $r = $pool->submit(1)->wait();
        $this->assertSame(2, $prepared, 'prepare ran before each worker fork');
        $this->assertSame('ok', $r->outcome(), (string) $r->cause());
        $this->assertSame(
            ['hook ran in' => $r->pid(), 'task ran in' => $r->pid()],
            $r->value(),
            'the child hook ran in the worker that ran the task, before the task',
        );
        $this->assertArrayNotHasKey('forklift_pool_test_child_hook', $GLOBALS, 'the child hook ran in the worker only');
    }

    public function test_a_worker_whose_result_dies_in_serialization_is_replaced(): void
    {
        $pool = $this->pool = new Pool(function (string $what) {
            set_error_handler(null);
            if ($what === 'poison') {
                return new FatalToSerialize();
            }
            return getmypid();
        }, workers: 1);
        $before = $pool->submit('pid')->wait()->value();
        $this->assertSame('fatal', $pool->submit('poison')->wait()->outcome());
        $after = $pool->submit('pid')->wait()->value();
        $this->assertNotSame($before, $after, 'after a fatal error the worker left and a new one took over');
    }
}

/** A value whose serialization dies of a fatal error (anonymous classes cannot be serialized). */
final class FatalToSerialize
{
    public function __serialize(): array
    {
        trigger_error('cannot serialize this', E_USER_ERROR);
        return [];
    }
}
