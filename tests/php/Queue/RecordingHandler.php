<?php

declare(strict_types=1);

namespace Forklift\Tests\Queue;

use Forklift\Queue\Message;

/**
 * The handler of the queue tests: does what the message's body says and writes one line when it
 * starts and one when it returns, so a test can wait for and count deliveries:
 * `start PID BODY ATTEMPT TIME` / `end PID BODY ATTEMPT TIME`.
 *
 * Bodies: `ok:TAG` returns; `throw:TAG` throws; `reject:TAG` throws MessageRejectedException;
 * `segv:TAG` segfaults; `oom:TAG` exhausts a 32M memory_limit; `exit:TAG` exit(3)s;
 * `hang:TAG` sleeps (for the timeout); `sleep:SECONDS:TAG` sleeps then returns;
 * `block:TAG` waits until the file "LOG.TAG.go" exists (bounded: 60 s), then returns.
 */
final class RecordingHandler
{
    public function __construct(public readonly string $log)
    {
    }

    public function __invoke(string $body, Message $message): void
    {
        $this->line("start $body $message->attempts");
        $parts = explode(':', $body);
        switch ($parts[0]) {
            case 'throw':
                throw new \RuntimeException("handler failed on $body");
            case 'reject':
                throw new \Forklift\Queue\MessageRejectedException("cannot ever handle $body");
            case 'segv':
                posix_kill(getmypid(), \SIGSEGV);
                break;
            case 'oom':
                ini_set('memory_limit', '32M');
                $hog = [];
                while (true) {
                    $hog[] = str_repeat('x', 1 << 20);
                }
            case 'exit':
                exit(3);
            case 'hang':
                sleep(60);
                break;
            case 'sleep':
                usleep((int) ((float) $parts[1] * 1e6));
                break;
            case 'block':
                $deadline = microtime(true) + 60;
                while (!file_exists("$this->log.$parts[1].go") && microtime(true) < $deadline) {
                    usleep(5000);
                }
                break;
        }
        $this->line("end $body $message->attempts");
    }

    private function line(string $what): void
    {
        file_put_contents($this->log, sprintf("%s %d %s %.6f\n", explode(' ', $what)[0], getmypid(), substr($what, strpos($what, ' ') + 1), microtime(true)), \FILE_APPEND | \LOCK_EX);
    }

    /**
     * The lines of `$log`, parsed.
     *
     * @return list<array{event: string, pid: int, body: string, attempt: int, at: float}>
     */
    public static function lines(string $log): array
    {
        $out = [];
        foreach (file($log, \FILE_IGNORE_NEW_LINES) ?: [] as $l) {
            [$event, $pid, $body, $attempt, $at] = explode(' ', $l);
            $out[] = ['event' => $event, 'pid' => (int) $pid, 'body' => $body, 'attempt' => (int) $attempt, 'at' => (float) $at];
        }

        return $out;
    }

    /** @return list<array{event: string, pid: int, body: string, attempt: int, at: float}> the lines of `$event` for `$body` */
    public static function of(string $log, string $event, string $body): array
    {
        return array_values(array_filter(self::lines($log), fn ($l) => $l['event'] === $event && $l['body'] === $body));
    }
}
