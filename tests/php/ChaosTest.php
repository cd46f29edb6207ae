<?php

declare(strict_types=1);

namespace Forklift\Tests;

use Forklift\JobResult;
use Forklift\Pool;
use Forklift\Tests\Support\Procfs;
use PHPUnit\Framework\TestCase;

/**
 * A pool under fire: thousands of tasks (FORKLIFT_CHAOS_TASKS, default 2000) of which about one in
 * ten kills its worker, each in one of the ways a PHP worker dies in production. Every task still
 * gets exactly one result with the true cause, and nothing is left behind.
 */
final class ChaosTest extends TestCase
{
    private const SEED = 20240611;

    public function test_every_task_gets_exactly_one_result_with_the_true_cause_while_workers_die_at_random(): void
    {
        $count = (int) (getenv('FORKLIFT_CHAOS_TASKS') ?: 2000);
        $plan = self::plan($count);
        $name = 'chaos-' . getmypid();
        $pool = new Pool(function (array $task) {
            set_error_handler(null); // PHPUnit's handler, inherited, would turn the fatal error into an exception.
            switch ($task['fate']) {
                case 'kill':
                    posix_kill(getmypid(), SIGKILL);
                    break;
                case 'segv':
                    posix_kill(getmypid(), SIGSEGV);
                    break;
                case 'fatal':
                    trigger_error("planned fatal {$task['i']}", E_USER_ERROR);
                    break;
                case 'oom':
                    $hog = str_repeat('x', 80 << 20);
                    break;
                case 'exit':
                    exit($task['code']);
                case 'loop':
                    while (true) {
                    }
            }
            return [$task['i'] * 3, getmypid()];
        }, workers: 4, timeout: 1.0, grace: 0.2, memoryLimit: '64M', name: $name);

        $workerPids = array_column($pool->stats()['workers'], 'pid');
        /** @var array<int, list<JobResult>> $results by task id */
        $results = [];
        $pool->onResult(function (JobResult $r, int $taskId) use (&$results, &$workerPids, $pool) {
            $results[$taskId][] = $r;
            $workerPids[] = $r->pid();
            if (count($results) % 50 === 0) {
                array_push($workerPids, ...array_column($pool->stats()['workers'], 'pid'));
            }
        });

        /** @var array<int, int> $planOf task id => index in the plan */
        $planOf = [];
        foreach ($plan as $i => $fate) {
            $planOf[$pool->submit(['i' => $i] + $fate)->id()] = $i;
        }
        $pool->drain();

        $this->assertCount($count, $planOf, 'every submit was accepted');
        $this->assertEqualsCanonicalizing(array_keys($planOf), array_keys($results), 'a result for every task, none for a task never submitted');
        $twice = array_keys(array_filter($results, fn (array $rs) => count($rs) !== 1));
        $this->assertSame([], $twice, 'tasks with more than one result');

        $wrong = [];
        $tally = [];
        foreach ($results as $taskId => [$r]) {
            $fate = $plan[$planOf[$taskId]];
            $tally[$fate['fate']] = ($tally[$fate['fate']] ?? 0) + 1;
            $why = self::mismatch($planOf[$taskId], $fate, $r);
            if ($why !== null) {
                $wrong[] = "task $taskId ({$fate['fate']}): $why";
            }
        }
        $this->assertSame([], array_slice($wrong, 0, 20), count($wrong) . ' tasks ended otherwise than planned');
        foreach (['ok', 'kill', 'segv', 'fatal', 'oom', 'exit', 'loop'] as $fate) {
            $this->assertGreaterThan(0, $tally[$fate] ?? 0, "the plan has at least one '$fate' task");
        }

        $stats = $pool->stats();
        $this->assertSame($tally['ok'], $stats['completed']);
        $this->assertSame($count - $tally['ok'], $stats['failed']);
        $this->assertSame($tally['loop'], $stats['timedOut']);
        $this->assertSame($tally['oom'], $stats['oom']);
        $this->assertSame(0, $stats['retried']);
        $this->assertSame(0, $stats['queued']);
        $this->assertSame(0, $stats['running']);

        // The pool is still good for work, and so is the parent.
        $after = $pool->submit(['i' => $count, 'fate' => 'ok'])->wait();
        $this->assertSame([3 * $count, $after->pid()], $after->value());
        $this->assertSame('ok', \Forklift\fork(fn () => 'parent fine')->wait()->outcome());
        $this->assertSame([], Procfs::zombieChildren(), 'zombie children of the test process while the pool runs');

        array_push($workerPids, ...array_column($pool->stats()['workers'], 'pid'));
        $this->assertSame([], $pool->shutdown());

        $this->assertSame([], Procfs::zombieChildren(), 'zombie children after shutdown');
        $alive = [];
        foreach (array_unique($workerPids) as $pid) {
            $stat = Procfs::stat($pid);
            if ($stat !== null && ($stat['ppid'] === getmypid() || str_contains($this->cmdline($pid), "forklift: $name "))) {
                $alive[] = "$pid ({$stat['state']}): " . $this->cmdline($pid);
            }
        }
        $this->assertSame([], $alive, 'workers still alive after shutdown, out of ' . count(array_unique($workerPids)) . ' seen');
        $this->assertSame([], $this->processesTitled("forklift: $name "), 'orphaned workers of this pool anywhere');
    }

    /**
     * The fate of each task, from a fixed seed: about 10 % die, of which loops (each costs a worker
     * `timeout:` seconds) are kept rare.
     *
     * @return list<array{fate: string, code?: int}>
     */
    private static function plan(int $count): array
    {
        mt_srand(self::SEED);
        $plan = [];
        for ($i = 0; $i < $count; $i++) {
            $roll = mt_rand(0, 999);
            $plan[] = match (true) {
                $roll < 5 => ['fate' => 'loop'],
                $roll < 25 => ['fate' => 'kill'],
                $roll < 45 => ['fate' => 'segv'],
                $roll < 65 => ['fate' => 'fatal'],
                $roll < 85 => ['fate' => 'oom'],
                $roll < 100 => ['fate' => 'exit', 'code' => mt_rand(1, 200)],
                default => ['fate' => 'ok'],
            };
        }
        mt_srand();
        return $plan;
    }

    /** Why `$r` is not how task `$i` with `$fate` should have ended; null when it is. */
    private static function mismatch(int $i, array $fate, JobResult $r): ?string
    {
        $got = "{$r->outcome()}: {$r->cause()}";
        $ok = match ($fate['fate']) {
            'ok' => $r->outcome() === 'ok' && $r->value() === [$i * 3, $r->pid()],
            'kill' => $r->outcome() === 'signal' && $r->signalName() === 'SIGKILL',
            'segv' => $r->outcome() === 'signal' && $r->signalName() === 'SIGSEGV',
            'fatal' => $r->outcome() === 'fatal' && $r->fatalError()?->message() === "planned fatal $i",
            'oom' => $r->outcome() === 'oom' && str_contains((string) $r->cause(), 'exceeded the memory limit of 64 MB'),
            'exit' => $r->outcome() === 'exit' && $r->exitCode() === $fate['code'],
            'loop' => $r->outcome() === 'timeout' && $r->timedOut(),
        };
        if ($ok && $r->attempts() !== 1) {
            return "ran {$r->attempts()} times without retries";
        }
        return $ok ? null : ($r->ok() ? 'ok: ' . json_encode($r->value()) : $got);
    }

    private function cmdline(int $pid): string
    {
        return str_replace("\0", ' ', (string) @file_get_contents("/proc/$pid/cmdline"));
    }

    /** @return list<string> live processes whose title contains `$title` */
    private function processesTitled(string $title): array
    {
        $found = [];
        foreach (glob('/proc/[0-9]*') as $dir) {
            $pid = (int) basename($dir);
            if (str_contains($this->cmdline($pid), $title)) {
                $found[] = "$pid: " . trim($this->cmdline($pid));
            }
        }
        return $found;
    }
}
