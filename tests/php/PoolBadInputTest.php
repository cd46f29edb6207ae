<?php

declare(strict_types=1);

namespace Forklift\Tests;

use Forklift\InvalidArgumentException;
use Forklift\Pool;
use Forklift\PoolException;
use PHPUnit\Framework\TestCase;

/** Every bad pool argument gets a typed exception whose message says what to pass. */
final class PoolBadInputTest extends TestCase
{
    private const CALLABLE_HINT = "must be a callable (a Closure, a function name, [\$object, 'method'] or an invokable object)";

    /** @return array<string, array{\Closure, class-string, list<string>}> */
    public function bad_pools(): array
    {
        $id = fn ($x) => $x;
        $invalid = InvalidArgumentException::class;
        return [
            'no workers' => [fn () => new Pool($id, workers: 0), $invalid, ['Forklift\Pool: $workers must be 1 or more, 0 given']],
            'a handler that is not callable' => [fn () => new Pool('nope'), $invalid, ['argument #1 ($handler) ' . self::CALLABLE_HINT, 'string "nope" given']],
            'a negative timeout' => [fn () => new Pool($id, timeout: -1.0), $invalid, ['$timeout must be a finite number of seconds, more than 0', '-1 given']],
            'a NaN timeout' => [fn () => new Pool($id, timeout: NAN), $invalid, ['$timeout must be a finite number of seconds', 'NaN given']],
            'grace without timeout' => [fn () => new Pool($id, grace: 1.0), $invalid, ['grace: only applies with a timeout:', 'add timeout: or drop grace:']],
            'a negative grace' => [fn () => new Pool($id, timeout: 1.0, grace: -1.0), $invalid, ['$grace must be a finite number of seconds, 0 or more']],
            'softTimeout not shorter than timeout' => [fn () => new Pool($id, timeout: 1.0, softTimeout: 2.0), $invalid, ['softTimeout: (2 s) must be shorter than timeout: (1 s)']],
            'maxJobs 0' => [fn () => new Pool($id, maxJobs: 0), $invalid, ['$maxJobs must be 1 or more, 0 given']],
            'maxMemory with an unknown unit' => [fn () => new Pool($id, maxMemory: '12Q'), $invalid, ['$maxMemory must be a size in bytes', 'like "256M"', 'string "12Q" given']],
            'a negative maxMemory' => [fn () => new Pool($id, maxMemory: -5), $invalid, ['$maxMemory must be a size in bytes, more than 0', 'int -5 given']],
            'memoryLimit that is not a size' => [fn () => new Pool($id, memoryLimit: 'lots'), $invalid, ['$memoryLimit must be a size in bytes', 'string "lots" given']],
            'negative retries' => [fn () => new Pool($id, retries: -1), $invalid, ['$retries must be 0 or more, -1 given']],
            'an empty queue' => [fn () => new Pool($id, queueSize: 0), $invalid, ['$queueSize must be 1 or more, 0 given']],
            'onWorkerStart not callable' => [fn () => new Pool($id, onWorkerStart: 42), $invalid, ['$onWorkerStart ' . self::CALLABLE_HINT, 'int 42 given']],
            'an empty name' => [fn () => new Pool($id, name: ''), $invalid, ['$name must be 1 to 64 characters']],
            'ttl 0' => [fn () => new Pool($id, ttl: 0.0), $invalid, ['$ttl must be a finite number of seconds, more than 0', '0 given']],
            'idleTtl INF' => [fn () => new Pool($id, idleTtl: INF), $invalid, ['$idleTtl must be a finite number of seconds', 'inf given']],
            'prefetch 0' => [fn () => new Pool($id, prefetch: 0), $invalid, ['$prefetch must be 1 to 1024 (tasks handed to a worker at once), 0 given']],
            'workers as a string' => [fn () => new Pool($id, workers: '4'), \TypeError::class, ['workers']],
        ];
    }

    /**
     * @dataProvider bad_pools
     * @param list<string> $fragments
     */
    public function test_a_bad_pool_option_is_refused_with_a_message_saying_what_to_pass(
        \Closure $make,
        string $class,
        array $fragments
    ): void {
        try {
            $make();
            $this->fail('no exception');
        } catch (\Throwable $e) {
            $this->assertSame($class, get_class($e), $e->getMessage());
            foreach ($fragments as $f) {
                $this->assertStringContainsString($f, $e->getMessage());
            }
        }
    }

    /** @return array<string, array{\Closure, class-string, list<string>}> */
    public function bad_calls(): array
    {
        $invalid = InvalidArgumentException::class;
        return [
            'a closure as payload' => [fn (Pool $p) => $p->submit(fn () => 1), $invalid, ['Forklift\Pool::submit(): the payload cannot be serialized', "Serialization of 'Closure' is not allowed"]],
            'a resource as payload' => [fn (Pool $p) => $p->submit(['f' => STDERR]), $invalid, ['Forklift\Pool::submit(): the payload holds a resource at [f]']],
            'onResult of a string that names nothing' => [fn (Pool $p) => $p->onResult('nope'), $invalid, ['Forklift\Pool::onResult(): argument #1 ($fn) ' . self::CALLABLE_HINT]],
            'waitAny of nothing' => [fn (Pool $p) => $p->waitAny([]), $invalid, ['argument #1 ($tasks) is empty; pass at least one Forklift\Task']],
            'waitAny of an int' => [fn (Pool $p) => $p->waitAny([1]), $invalid, ['element [0] of argument #1 ($tasks) must be a Forklift\Task, int 1 given']],
            'waitAny with a negative timeout' => [fn (Pool $p) => $p->waitAny([$p->submit(1)], -1.0), $invalid, ['argument #2 ($timeout) must be a finite number of seconds, 0 or more']],
            'submit after shutdown' => [function (Pool $p) { $p->shutdown(); $p->submit(1); }, PoolException::class, ['Forklift\Pool::submit(): the pool is shut down']],
        ];
    }

    /**
     * @dataProvider bad_calls
     * @param list<string> $fragments
     */
    public function test_a_bad_call_on_a_pool_is_refused_and_the_pool_goes_on(
        \Closure $call,
        string $class,
        array $fragments
    ): void {
        $pool = new Pool(fn ($x) => $x, workers: 1);
        try {
            $call($pool);
            $this->fail('no exception');
        } catch (\Throwable $e) {
            $this->assertSame($class, get_class($e), $e->getMessage());
            foreach ($fragments as $f) {
                $this->assertStringContainsString($f, $e->getMessage());
            }
        }
        try {
            $this->assertSame(7, $pool->submit(7)->wait()->value(), 'the pool still works');
        } catch (PoolException $e) {
            $this->assertStringContainsString('shut down', $e->getMessage());
        }
        $pool->shutdown();
    }
}
