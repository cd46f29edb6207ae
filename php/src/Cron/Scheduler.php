<?php

declare(strict_types=1);

namespace Forklift\Cron;

use Forklift\Daemon;
use Forklift\JobRun;

/**
 * Magento's cron, run by a Forklift daemon, with every run's truth on its `cron_schedule` row.
 *
 * Per group, as Magento 2 does it: pending rows are generated `scheduleAheadFor` minutes ahead
 * every `scheduleGenerateEvery` minutes; a due row starts (`running` + `executed_at` when its
 * child starts) or, later than `scheduleLifetime`, becomes `missed`; `success`/`error` +
 * `finished_at` come from its JobResult (the cause and the error records in `messages`, the facts
 * in Forklift's table); history is cleaned up by age per status; pending rows of removed jobs
 * are deleted. Rows left `running` whose process is gone become `error` ("orphaned: pid N on
 * host H is gone"), decided from the dispatcher's own runs and the host/pid recorded.
 *
 * Each group is a serial lane of the daemon (one job at a time); a group with
 * `useSeparateProcess`, and a job marked parallel, run each job in a child of its own. A job whose
 * previous run still runs is not started again: its row becomes `missed` with that reason.
 *
 * A row is taken (`running`) when a run of its job starts, not when it is queued: the run takes
 * the oldest due row of its job (a job never runs twice at once, so the code says which run a
 * row is). A run queued and never started — the daemon stopped first, or a reload handed it to
 * the next dispatcher, where it takes the row when it starts — leaves its row pending.
 */
final class Scheduler
{
    /** @var array<string, Group> */
    private array $groups = [];
    /** @var array<string, Job> */
    private array $jobs = [];
    /** @var array<int, int> daemon run id => schedule_id */
    private array $runs = [];
    /** @var array<int, string> schedule_id => job code, while its run runs here */
    private array $live = [];
    /** @var array<string, true> jobs with a run queued and not started yet */
    private array $waiting = [];
    /** @var array<string, float> group => when rows were last generated (Unix time) */
    private array $generated = [];
    /** @var array<string, float> group => when history was last cleaned up */
    private array $cleaned = [];
    private float $reconciled = 0.0;
    private float $pruned = 0.0;
    /** @var list<string> jobs left out (lenient mode), with why */
    private array $errors = [];
    private readonly string $host;
    private readonly \DateTimeZone $zone;
    /** @var \Closure(): \DateTimeImmutable */
    private readonly \Closure $clock;
    /** @var \Closure(string): ?string */
    private readonly \Closure $config;

    /**
     * @param list<Group> $groups
     * @param list<Job>   $jobs
     * @param \DateTimeZone|null $zone  Magento's general/locale/timezone (default: the system's)
     * @param callable(string): ?string|null $config  reads a config_path
     * @param callable(): \DateTimeImmutable|null $clock  now (tests pass their own)
     */
    public function __construct(
        private readonly Daemon $daemon,
        private readonly Store $store,
        array $groups,
        array $jobs,
        ?\DateTimeZone $zone = null,
        ?callable $config = null,
        ?callable $clock = null,
        float $tick = 1.0,
        ?string $host = null,
        private readonly bool $strict = true,
    ) {
        $this->host = $host ?? (gethostname() ?: 'localhost');
        $this->zone = $zone ?? new \DateTimeZone(date_default_timezone_get());
        $this->clock = $clock === null
            ? static fn (): \DateTimeImmutable => new \DateTimeImmutable('now', new \DateTimeZone('UTC'))
            : \Closure::fromCallable($clock);
        $this->config = $config === null ? static fn (string $path): ?string => null : \Closure::fromCallable($config);
        foreach ($groups as $g) {
            if (!$g instanceof Group) {
                throw new \InvalidArgumentException('$groups: pass Forklift\Cron\Group objects, ' . get_debug_type($g) . ' given');
            }
            if (isset($this->groups[$g->name])) {
                throw new \InvalidArgumentException("cron group \"{$g->name}\" is given twice");
            }
            $this->groups[$g->name] = $g;
            if (!$g->useSeparateProcess && $g->name !== 'default') {
                $daemon->lane($g->name);
            }
        }
        foreach ($jobs as $job) {
            if (!$job instanceof Job) {
                throw new \InvalidArgumentException('$jobs: pass Forklift\Cron\Job objects, ' . get_debug_type($job) . ' given');
            }
            try {
                $this->add($job);
            } catch (\InvalidArgumentException $e) {
                // Strict: the first bad job stops the start. Lenient: it is reported and left out,
                // and the jobs that are fine run.
                if ($this->strict) {
                    throw $e;
                }
                $this->errors[] = $e->getMessage();
            }
        }
        try {
            $store->install();
        } catch (\PDOException $e) {
            throw new \RuntimeException(
                'cannot reach the cron_schedule database: ' . $e->getMessage()
                . '; check the DSN, the server and the credentials',
                0,
                $e
            );
        }
        // A connection is never shared with a child: each side connects again when it needs to.
        \Forklift\on_fork(prepare: fn () => $store->disconnect());
        $daemon->onJobStart(fn (JobRun $r) => $this->started($r));
        $daemon->onJobEnd(fn (JobRun $r) => $this->ended($r));
        $daemon->every($tick, fn () => $this->tick(), name: 'cron scheduler');
    }

    /**
     * The jobs left out because their configuration is wrong (with `strict: false`), each with
     * the job and what to fix. Log them at start.
     *
     * @return list<string>
     */
    public function errors(): array
    {
        return $this->errors;
    }

    private function add(Job $job): void
    {
        $group = $this->groups[$job->group] ?? null;
        if ($group === null) {
            throw new \InvalidArgumentException(sprintf(
                'cron job %s: unknown group "%s" (groups: %s); add the group or fix the job\'s group',
                $job->code,
                $job->group,
                implode(', ', array_keys($this->groups))
            ));
        }
        if (isset($this->jobs[$job->code])) {
            throw new \InvalidArgumentException("cron job {$job->code} is declared twice");
        }
        $expr = $this->expression($job);
        $this->jobs[$job->code] = $job;
        $separate = $group->useSeparateProcess || $job->parallel;
        $this->daemon->job(
            $job->code,
            $job->run,
            lane: $separate ? null : $group->name,
            parallel: $separate,
            timeout: $job->timeout,
            softTimeout: $job->softTimeout,
            schedule: $expr === null ? 'config: ' . $job->configPath : (string) $expr,
        );
    }

    /** The job's expression: its config_path's value when set, else its schedule; null if neither. */
    private function expression(Job $job): ?Expression
    {
        $text = $job->schedule;
        if ($job->configPath !== null) {
            $configured = ($this->config)($job->configPath);
            if ($configured !== null && trim($configured) !== '') {
                $text = $configured;
            }
        }
        if (trim($text) === '') {
            return null;
        }
        try {
            return new Expression($text);
        } catch (\InvalidArgumentException $e) {
            throw new \InvalidArgumentException("cron job {$job->code}: " . $e->getMessage(), 0, $e);
        }
    }

    /** One round: orphans, generation, runs due, missed rows, clean-up. Called by the daemon's timer. */
    public function tick(): void
    {
        $now = ($this->clock)();
        $t = (float) $now->format('U.u');
        if ($t - $this->reconciled >= 60.0) {
            $this->reconcile($now);
            $this->reconciled = $t;
        }
        foreach ($this->groups as $group) {
            $codes = $this->codesOf($group);
            if ($t - ($this->generated[$group->name] ?? 0.0) >= $group->scheduleGenerateEvery * 60) {
                $this->generate($group, $now);
                $this->generated[$group->name] = $t;
            }
            $this->runDue($group, $codes, $now);
            if ($t - ($this->cleaned[$group->name] ?? 0.0) >= $group->historyCleanupEvery * 60) {
                $this->store->cleanup($codes, Store::SUCCESS, $now->modify("-{$group->historySuccessLifetime} minutes"));
                $this->store->cleanup($codes, Store::ERROR, $now->modify("-{$group->historyFailureLifetime} minutes"));
                $this->store->cleanup($codes, Store::MISSED, $now->modify("-{$group->historyFailureLifetime} minutes"));
                $this->cleaned[$group->name] = $t;
            }
        }
        if ($t - $this->pruned >= 60.0) {
            $this->store->dropUnknownPending(array_keys($this->jobs));
            $this->pruned = $t;
        }
    }

    /** @return list<string> */
    private function codesOf(Group $group): array
    {
        return array_values(array_map(
            fn (Job $j) => $j->code,
            array_filter($this->jobs, fn (Job $j) => $j->group === $group->name)
        ));
    }

    private function generate(Group $group, \DateTimeImmutable $now): void
    {
        $start = $now->setTime((int) $now->format('H'), (int) $now->format('i'));
        $until = $start->modify("+{$group->scheduleAheadFor} minutes");
        foreach ($this->jobs as $job) {
            if ($job->group !== $group->name) {
                continue;
            }
            $expr = $this->expression($job);
            if ($expr === null) {
                continue; // disabled through its config_path
            }
            // Magento walks whole minutes from now; nextAfter() jumps to the matching ones.
            $at = $expr->matches($start, $this->zone) ? $start : $expr->nextAfter($start, $this->zone);
            while ($at !== null && $at <= $until) {
                $this->store->schedule($job->code, $at, $now);
                $at = $expr->nextAfter($at, $this->zone);
            }
        }
    }

    /** @param list<string> $codes */
    private function runDue(Group $group, array $codes, \DateTimeImmutable $now): void
    {
        $lifetime = $now->modify("-{$group->scheduleLifetime} minutes");
        foreach ($this->store->due($codes, $now) as $row) {
            $id = $row['schedule_id'];
            $scheduled = Store::parse($row['scheduled_at']);
            if ($scheduled < $lifetime) {
                $this->store->finish($id, Store::MISSED, sprintf(
                    'Cron Job %s is missed at %s (scheduled at %s, schedule_lifetime %d min)',
                    $row['job_code'],
                    Store::time($now),
                    $row['scheduled_at'],
                    $group->scheduleLifetime
                ), $now);
                continue;
            }
            $code = $row['job_code'];
            if (isset($this->waiting[$code])) {
                continue; // a run of it is queued: when it starts it takes the oldest due row
            }
            if (in_array($code, $this->live, true)) {
                // Its previous run still runs here: this row is not started (recorded).
                $this->store->finish($id, Store::MISSED, sprintf(
                    'not started: the previous run of %s was still running (Forklift does not start a job twice)',
                    $code
                ), $now);
                continue;
            }
            if ($this->daemon->queue($code) !== null) {
                $this->waiting[$code] = true;
            }
            // Refused: a run of it came over from the previous dispatcher (a reload) and runs or
            // waits there; the row stays pending for the next run of the job, or is missed by age.
        }
    }

    /**
     * A run starts: it takes the oldest due pending row of its job (`running`, `executed_at`, its
     * host and pid). A job never runs twice at once, so the job code says which run a row is:
     * this also holds for a run that a reload handed over from the previous dispatcher.
     */
    private function started(JobRun $r): void
    {
        $code = $r->name();
        if (!isset($this->jobs[$code])) {
            return;
        }
        unset($this->waiting[$code]);
        $now = ($this->clock)();
        $row = $this->store->due([$code], $now)[0] ?? null;
        if ($row === null || !$this->store->claim($row['schedule_id'], $now, $this->host, $r->pid())) {
            return; // asked for by application code, not by a row
        }
        $id = $row['schedule_id'];
        $this->runs[$r->id()] = $id;
        $this->live[$id] = $code;
    }

    private function ended(JobRun $r): void
    {
        if ($r->result() === null) {
            unset($this->waiting[$r->name()]); // never started: its row was never taken
        }
        $id = $this->runs[$r->id()] ?? null;
        if ($id === null) {
            return;
        }
        // Mapped runs have started (their row is taken at the start), so they have a result.
        unset($this->runs[$r->id()], $this->live[$id]);
        $now = ($this->clock)();
        $result = $r->result();
        $records = [];
        foreach ($result->errors() as $e) {
            $records[] = ['level' => $e->levelName(), 'message' => $e->message(), 'file' => $e->file(), 'line' => $e->line()];
        }
        $ex = $result->exception();
        if ($ex !== null) {
            $records[] = ['exception' => $ex->className(), 'message' => $ex->message(), 'file' => $ex->file(), 'line' => $ex->line()];
        }
        $messages = null;
        if (!$result->ok()) {
            $lines = [$result->cause() ?? $result->outcome()];
            foreach ($result->errors() as $e) {
                $lines[] = (string) $e;
            }
            $messages = implode("\n", $lines);
        } elseif ($result->errors() !== []) {
            $messages = implode("\n", array_map('strval', $result->errors()));
        }
        $this->store->finish($id, $result->ok() ? Store::SUCCESS : Store::ERROR, $messages, $now, [
            'outcome' => $result->outcome(),
            'exit_code' => $result->exitCode(),
            'signal_number' => $result->signal(),
            'duration' => $result->duration(),
            'cpu_time' => $result->cpuTime(),
            'peak_memory' => $result->peakMemory(),
            'max_rss' => $result->maxRss(),
            'records' => json_encode($records, JSON_INVALID_UTF8_SUBSTITUTE | JSON_UNESCAPED_SLASHES),
        ]);
    }

    /** Whether `$pid` is alive and one of Forklift's processes (its title says so). */
    private static function isForkliftProcess(int $pid): bool
    {
        $cmdline = @file_get_contents("/proc/$pid/cmdline");
        return is_string($cmdline) && str_starts_with($cmdline, 'forklift: ');
    }

    /**
     * Rows left `running` on this host whose process is gone (a dispatcher killed mid-run, a
     * machine rebooted) become `error`. Rows of other hosts are theirs to reconcile.
     */
    private function reconcile(\DateTimeImmutable $now): void
    {
        foreach ($this->store->running() as $row) {
            $id = $row['schedule_id'];
            if ($row['host'] !== null && $row['host'] !== $this->host) {
                continue;
            }
            if (isset($this->live[$id])) {
                continue; // ours, running now
            }
            $pid = $row['pid'] ?? 0;
            if ($pid > 0 && self::isForkliftProcess($pid)) {
                continue; // still running under another dispatcher of this host (a reload)
            }
            $this->store->finish($id, Store::ERROR, sprintf(
                'orphaned: pid %d on host %s is gone (its dispatcher ended while it ran)',
                $pid,
                $row['host'] ?? $this->host
            ), $now, ['outcome' => 'orphaned']);
        }
    }
}
