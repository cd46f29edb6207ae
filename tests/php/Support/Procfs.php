<?php

declare(strict_types=1);

namespace Forklift\Tests\Support;

/**
 * What /proc says of processes, for tests that check nothing is left behind. Processes that are
 * not our children (or that Forklift owns) give no fd to wait on, so waiting reads /proc, pausing a
 * millisecond between looks, until the event or a deadline.
 */
final class Procfs
{
    /** @return array{state: string, ppid: int}|null from /proc/PID/stat; null once the pid is gone */
    public static function stat(int $pid): ?array
    {
        $stat = @file_get_contents("/proc/$pid/stat");
        if ($stat === false) {
            return null;
        }
        // The command name may contain spaces and parentheses: fields start after the last ')'.
        $fields = explode(' ', substr($stat, strrpos($stat, ')') + 2));
        return ['state' => $fields[0], 'ppid' => (int) $fields[1]];
    }

    /** Running, sleeping or stopped: anything but a zombie or no process at all. */
    public static function isAlive(int $pid): bool
    {
        $stat = self::stat($pid);
        return $stat !== null && $stat['state'] !== 'Z' && $stat['state'] !== 'X';
    }

    public static function describe(int $pid): string
    {
        $stat = self::stat($pid);
        return $stat === null ? "$pid gone" : "$pid state {$stat['state']} ppid {$stat['ppid']}";
    }

    /**
     * Waits for the event "every pid has exited" (zombie or gone) until `$seconds` pass.
     *
     * @param list<int> $pids
     * @return list<int> the pids still alive at the deadline
     */
    public static function waitUntilAllGone(array $pids, float $seconds): array
    {
        $deadline = hrtime(true) + (int) ($seconds * 1e9);
        do {
            $alive = array_values(array_filter($pids, fn (int $pid) => self::isAlive($pid)));
            if ($alive === []) {
                return [];
            }
            usleep(1000);
        } while (hrtime(true) < $deadline);
        return $alive;
    }

    /** @return list<int> children of this process that have exited and not been reaped, sorted */
    public static function zombieChildren(): array
    {
        $me = getmypid();
        $zombies = [];
        foreach (glob('/proc/[0-9]*/stat') as $file) {
            $pid = (int) basename(dirname($file));
            $stat = self::stat($pid);
            if ($stat !== null && $stat['ppid'] === $me && $stat['state'] === 'Z') {
                $zombies[] = $pid;
            }
        }
        sort($zombies);
        return $zombies;
    }

    /** The forklift extension this process has loaded, as the kernel mapped it. */
    public static function loadedExtension(): string
    {
        foreach (file('/proc/self/maps', FILE_IGNORE_NEW_LINES) as $line) {
            if (preg_match('#(/\S*libforklift\.so)$#', $line, $m)) {
                return $m[1];
            }
        }
        throw new \RuntimeException('libforklift.so is not mapped into this process');
    }
}
