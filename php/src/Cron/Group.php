<?php

declare(strict_types=1);

namespace Forklift\Cron;

/**
 * A cron group as Magento 2 configures it (`system/cron/<group>/…`, minutes): how far ahead
 * pending rows are generated and how often, how late a row may start before it is missed, how
 * long history is kept, and whether its jobs run one at a time (a serial lane of the daemon) or
 * each in a child of its own (`use_separate_process`).
 */
final class Group
{
    /**
     * @param int $scheduleGenerateEvery   minutes between two generations of pending rows
     * @param int $scheduleAheadFor        minutes ahead that pending rows are generated for
     * @param int $scheduleLifetime        minutes a pending row may be late before it is "missed"
     * @param int $historyCleanupEvery     minutes between two history clean-ups
     * @param int $historySuccessLifetime  minutes "success" rows are kept
     * @param int $historyFailureLifetime  minutes "error" and "missed" rows are kept
     * @param bool $useSeparateProcess     each job in a child of its own (else one at a time)
     */
    public function __construct(
        public readonly string $name,
        public readonly int $scheduleGenerateEvery = 15,
        public readonly int $scheduleAheadFor = 20,
        public readonly int $scheduleLifetime = 15,
        public readonly int $historyCleanupEvery = 10,
        public readonly int $historySuccessLifetime = 60,
        public readonly int $historyFailureLifetime = 600,
        public readonly bool $useSeparateProcess = false,
    ) {
        if (preg_match('/^[A-Za-z0-9_.-]{1,64}$/', $name) !== 1) {
            throw new \InvalidArgumentException(sprintf(
                'cron group name "%s": use 1 to 64 letters, digits, "_", "-" or "."',
                addcslashes(substr($name, 0, 80), "\0..\37")
            ));
        }
        foreach ([
            'scheduleGenerateEvery' => $scheduleGenerateEvery,
            'scheduleAheadFor' => $scheduleAheadFor,
            'scheduleLifetime' => $scheduleLifetime,
            'historyCleanupEvery' => $historyCleanupEvery,
            'historySuccessLifetime' => $historySuccessLifetime,
            'historyFailureLifetime' => $historyFailureLifetime,
        ] as $option => $minutes) {
            if ($minutes < 1 || $minutes > 525600) {
                throw new \InvalidArgumentException(sprintf(
                    'cron group "%s": %s must be 1 to 525600 minutes, %d given',
                    $name,
                    $option,
                    $minutes
                ));
            }
        }
    }

    /** Magento 2's `default` group: 15/20/15/10/60/600, one job at a time. */
    public static function magentoDefault(string $name = 'default'): self
    {
        return new self($name, 15, 20, 15, 10, 60, 600, false);
    }

    /** Magento 2's `index` group: 1/4/2/10/60/600, each job in a child of its own. */
    public static function magentoIndex(string $name = 'index'): self
    {
        return new self($name, 1, 4, 2, 10, 60, 600, true);
    }
}
