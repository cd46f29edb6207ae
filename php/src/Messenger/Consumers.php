<?php

declare(strict_types=1);

namespace Forklift\Messenger;

use Forklift\Daemon;

/**
 * The Forklift consumers of this user on this host: each holds a pid file
 * `consumer-NAME-PID.pid` in Forklift's run directory (where `Daemon::defaultPidFile()` puts pid
 * files), with its status socket beside it. `forklift:stop-workers --wait` finds them here, in
 * every run directory this user's consumers may have used; consumers given a `--pid-file`
 * elsewhere are not found.
 */
final class Consumers
{
    /** The pid file of a consumer named `$name` in this process. */
    public static function pidFile(string $name, ?int $pid = null): string
    {
        return self::dir() . "/consumer-$name-" . ($pid ?? getmypid()) . '.pid';
    }

    /**
     * Pid files of consumers that run now (their pid file is locked); stale ones (left by a
     * consumer killed with -9) are passed over.
     *
     * @return list<string>
     */
    public static function running(?string $dir = null): array
    {
        $out = [];
        $files = [];
        foreach ($dir === null ? Daemon::runDirectories() : [$dir] as $d) {
            array_push($files, ...(glob("$d/consumer-*.pid") ?: []));
        }
        foreach (array_unique($files) as $file) {
            $fh = @fopen($file, 'r');
            if ($fh === false) {
                continue;
            }
            if (flock($fh, LOCK_SH | LOCK_NB)) {
                // Nobody holds it: that consumer is gone.
                flock($fh, LOCK_UN);
            } else {
                $out[] = $file;
            }
            fclose($fh);
        }
        sort($out);

        return $out;
    }

    private static function dir(): string
    {
        return \dirname(Daemon::defaultPidFile('consumer'));
    }
}
