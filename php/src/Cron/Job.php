<?php

declare(strict_types=1);

namespace Forklift\Cron;

/**
 * A cron job as Magento declares it (`crontab.xml` `<job name instance method>` with `<schedule>`
 * or `<config_path>`): its code (the `job_code` of its rows), its group, its schedule, and what
 * runs. `$parallel` runs it in a child of its own even in a serial group (the driskell daemon's
 * "jobs to run in parallel").
 */
final class Job
{
    /** @var \Closure(): mixed */
    public readonly \Closure $run;

    /**
     * @param string      $schedule    a cron expression (Magento's rules), or '' when `$configPath` gives it
     * @param string|null $configPath  read the expression from configuration (it wins when not empty)
     */
    public function __construct(
        public readonly string $code,
        public readonly string $group,
        public readonly string $schedule,
        callable $run,
        public readonly bool $parallel = false,
        public readonly ?string $configPath = null,
        public readonly ?float $timeout = null,
        public readonly ?float $softTimeout = null,
    ) {
        if ($code === '' || strlen($code) > 255 || preg_match('/[\x00-\x1f]/', $code) === 1) {
            throw new \InvalidArgumentException(sprintf(
                'cron job code "%s": 1 to 255 printable characters (it is the job_code column)',
                addcslashes(substr($code, 0, 80), "\0..\37")
            ));
        }
        if ($schedule === '' && $configPath === null) {
            throw new \InvalidArgumentException(
                "cron job $code has no schedule: give a cron expression or a config_path"
            );
        }
        $this->run = \Closure::fromCallable($run);
    }
}
