<?php

namespace Forklift\Tests\Support;

/** For tests of broken channels: a child writes raw bytes to its own end of its channel. */
final class OwnChannel
{
    /**
     * In a job child (or pool worker): writes raw bytes to its own channel. The channel is the child's end of
     * a socketpair made by fork(): a socket the parent did not have when it took `$before`, and a
     * blocking one, unlike the parent's ends of sibling jobs, which are non-blocking and inherited
     * through fork.
     *
     * @param array<int, string> $before sockets() in the parent, taken before the fork
     */
    public static function write(string $bytes, array $before): void
    {
        $candidates = [];
        foreach (self::sockets() as $fd => $socket) {
            $info = (string) @file_get_contents("/proc/self/fdinfo/$fd");
            $blocking = preg_match('/^flags:\s+([0-7]+)$/m', $info, $m) === 1 && (octdec($m[1]) & 04000) === 0;
            if ($blocking && !in_array($socket, $before, true)) {
                $candidates[] = $fd;
            }
        }
        if (count($candidates) !== 1) {
            throw new \RuntimeException('expected one channel socket, found fds ' . json_encode($candidates));
        }
        $stream = fopen("php://fd/{$candidates[0]}", 'w');
        fwrite($stream, $bytes);
        fclose($stream);
    }

    /** @return array<int, string> the sockets open in this process: fd => "socket:[inode]" */
    public static function sockets(): array
    {
        $sockets = [];
        foreach (scandir('/proc/self/fd') as $fd) {
            $link = ctype_digit($fd) ? @readlink("/proc/self/fd/$fd") : false;
            if ($link !== false && str_starts_with($link, 'socket:')) {
                $sockets[(int) $fd] = $link;
            }
        }
        return $sockets;
    }
}
