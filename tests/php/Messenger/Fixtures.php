<?php

declare(strict_types=1);

namespace Forklift\Tests\Messenger;

use Symfony\Component\Messenger\Exception\UnrecoverableMessageHandlingException;

/** A test message: what its handler does, and a tag to find it by. */
final class Job
{
    public function __construct(public readonly string $action, public readonly string $tag = '')
    {
    }
}

/** An exception whose __wakeup would run the application's code wherever it is unserialized. */
final class WakeupException extends \RuntimeException
{
    public function __wakeup(): void
    {
        exit(7);
    }
}

/** A result whose Serializable::unserialize() would run wherever it is revived (it leaves a file). */
final class Sneaky implements \Serializable
{
    public function __construct(public string $marker = '')
    {
    }

    public function serialize(): string
    {
        return $this->marker;
    }

    public function unserialize(string $data): void
    {
        touch($data . '.' . getmypid());
    }

    public function __serialize(): array
    {
        return [$this->marker];
    }

    public function __unserialize(array $data): void
    {
        touch($data[0] . '.' . getmypid());
    }
}

/** A second class, for metrics by class. */
final class Other
{
    public function __construct(public readonly string $tag = '')
    {
    }
}

/**
 * The handler: appends "tag pid action" to the log file (one write per line, so children's lines
 * never mix), then does what the message says.
 */
final class JobHandler
{
    public function __construct(private readonly string $log)
    {
    }

    public function __invoke(Job $job): string
    {
        file_put_contents($this->log, "$job->tag " . getmypid() . " $job->action\n", FILE_APPEND);
        switch ($job->action) {
            case 'ok':
                return "done $job->tag";
            case 'throw':
                throw new \RuntimeException("handler threw for $job->tag", 42);
            case 'unrecoverable':
                throw new UnrecoverableMessageHandlingException("do not retry $job->tag");
            case 'segfault':
                posix_kill(getmypid(), SIGSEGV);
                sleep(5);
                return 'not reached';
            case 'oom':
                ini_set('memory_limit', '32M');
                $a = [];
                while (true) {
                    $a[] = str_repeat('x', 1 << 20);
                }
            case 'fatal':
                \forklift_test_no_such_function();
                return 'not reached';
            case 'hang':
                while (true) {
                    sleep(1);
                }
            case 'soft':
                // Busy in PHP: the soft timeout's exception reaches it.
                while (true) {
                    usleep(1000);
                }
            case 'exit':
                exit(3);
            case 'slow':
                // Runs until the test creates LOG.release (bounded), so a test can act meanwhile.
                $deadline = microtime(true) + 20;
                while (!file_exists("$this->log.release") && microtime(true) < $deadline) {
                    usleep(5000);
                }
                file_put_contents($this->log, "$job->tag " . getmypid() . " slow-done\n", FILE_APPEND);
                return 'slow done';
            case 'db':
                // The application's DBAL connection, the one the Doctrine transport uses too.
                $GLOBALS['forklift_test_dbal']->executeStatement('INSERT INTO handled (tag, pid) VALUES (?, ?)', [$job->tag, getmypid()]);
                return 'row';
            case 'huge':
                // A result too big to come back: the handled stamp comes back without it.
                return str_repeat('x', 12 << 20);
            case 'serializable':
                return new Sneaky("$this->log.revived");
            case 'wakeup':
                throw new WakeupException("revived in the consumer it would exit(7) there ($job->tag)");
            case 'closure':
                // A result that does not serialize: the handled stamp comes back without it.
                return 'x' . (static fn () => 1)();
            default:
                throw new \LogicException("unknown action $job->action");
        }
    }
}

final class OtherHandler
{
    public function __construct(private readonly string $log)
    {
    }

    public function __invoke(Other $m): \Closure
    {
        file_put_contents($this->log, "$m->tag " . getmypid() . " other\n", FILE_APPEND);

        return static fn () => 'a closure result does not serialize';
    }
}

/** A PSR-3 logger that keeps the lines, placeholders filled (for assertions and failure messages). */
final class TestLogger extends \Psr\Log\AbstractLogger
{
    /** @var list<string> */
    public array $lines = [];

    public function log($level, $message, array $context = []): void
    {
        $replace = [];
        foreach ($context as $k => $v) {
            $replace['{' . $k . '}'] = \is_scalar($v) || $v instanceof \Stringable ? (string) $v : get_debug_type($v);
        }
        $this->lines[] = "$level: " . strtr((string) $message, $replace);
    }

    public function text(): string
    {
        return implode("\n", $this->lines);
    }
}
