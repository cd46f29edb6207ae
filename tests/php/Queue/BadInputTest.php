<?php

declare(strict_types=1);

namespace Forklift\Tests\Queue;

use Forklift\Daemon;
use Forklift\InvalidArgumentException;
use Forklift\Queue\Beanstalkd;
use Forklift\Queue\Consumer;
use Forklift\Tests\Support\DaemonKit;
use PHPUnit\Framework\TestCase;

/** Each wrong argument of the queue classes is refused, before anything connects, with what to pass instead. */
final class BadInputTest extends TestCase
{
    /** @return array<string, array{\Closure(): mixed, string}> */
    public static function badInputs(): array
    {
        $broker = static fn () => new Beanstalkd('127.0.0.1', 11300, tube: 'mail');
        $ok = static fn (string $body) => null;

        return [
            'no workers' => [fn () => new Consumer($broker(), $ok, workers: 0), '$workers must be 1 to 1024 (messages handled at once), 0 given'],
            'too many workers' => [fn () => new Consumer($broker(), $ok, workers: 5000), '$workers must be 1 to 1024'],
            'no attempts' => [fn () => new Consumer($broker(), $ok, maxAttempts: 0), '$maxAttempts must be 1 or more (1: bury at the first failure), 0 given'],
            'a handler that is not callable' => [fn () => new Consumer($broker(), 'no_such_function'), '$handler must be callable as fn (string $body, Message $message), string given'],
            'a negative retry delay' => [fn () => new Consumer($broker(), $ok, retryDelay: -1.0), '$retryDelay must be 0 or more seconds'],
            'a zero timeout' => [fn () => new Consumer($broker(), $ok, timeout: 0.0), '$timeout must be more than 0 seconds, or null for none'],
            'a zero poll interval' => [fn () => new Consumer($broker(), $ok, poll: 0.0), '$poll must be more than 0 seconds'],
            'a name with a space' => [fn () => new Consumer($broker(), $ok, name: 'my queue'), '$name names the daemon\'s job: 1 to 64 letters, digits'],
            'a logger without log()' => [fn () => new Consumer($broker(), $ok, logger: new \stdClass()), '$logger must be a PSR-3 logger'],
            'beanstalkd port 0' => [fn () => new Beanstalkd('127.0.0.1', 0), '$port must be 1 to 65535 (beanstalkd listens on 11300 by default), 0 given'],
            'beanstalkd tube starting with -' => [fn () => new Beanstalkd('127.0.0.1', 11300, tube: '-mail'), 'is not a beanstalkd tube name'],
            'beanstalkd without a host' => [fn () => new Beanstalkd('', 11300), '$host is empty'],
        ];
    }

    /** @dataProvider badInputs */
    public function test_a_bad_argument_is_refused_with_what_to_pass(\Closure $make, string $message): void
    {
        try {
            $make();
            $this->fail('no exception');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString($message, $e->getMessage());
        }
    }

    public function test_a_consumer_attaches_to_one_daemon_only(): void
    {
        $dir = DaemonKit::tempDir();
        try {
            $consumer = new Consumer(new Beanstalkd(), static fn (string $body) => null, name: 'mail');
            $consumer->attach(new Daemon('a', pidFile: "$dir/a.pid"));
            $this->expectException(InvalidArgumentException::class);
            $this->expectExceptionMessage('Forklift\\Queue\\Consumer "mail" is attached to a daemon already; make one Consumer per daemon');
            $consumer->attach(new Daemon('b', pidFile: "$dir/b.pid"));
        } finally {
            DaemonKit::removeDir($dir);
        }
    }
}
