<?php

namespace Forklift\Tests\Support;

/** PHP code run in a fresh process with the extension loaded, for what a test cannot do in its own. */
final class Subprocess
{
    /**
     * Runs `$code` (as `php -r`) behind an optional command prefix (`prlimit ...`, `setpriv ...`),
     * stdin from /dev/null, and waits for it.
     *
     * @param list<string> $prefix
     * @return array{status: int, out: string, err: string}
     */
    public static function php(string $code, array $prefix = []): array
    {
        $proc = proc_open(
            [...$prefix, PHP_BINARY, '-d', 'extension=' . Procfs::loadedExtension(), '-r', $code],
            [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']],
            $pipes
        );
        if (!is_resource($proc)) {
            throw new \RuntimeException('could not start ' . PHP_BINARY);
        }
        $out = (string) stream_get_contents($pipes[1]);
        $err = (string) stream_get_contents($pipes[2]);
        fclose($pipes[1]);
        fclose($pipes[2]);
        return ['status' => proc_close($proc), 'out' => $out, 'err' => $err];
    }
}
