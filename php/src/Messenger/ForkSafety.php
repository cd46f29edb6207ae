<?php

declare(strict_types=1);

namespace Forklift\Messenger;

use Forklift\InvalidArgumentException;

/**
 * Keeps a message's child off the sockets the consumer uses (its receiver's, or a handler's shared
 * DBAL connection), so that the two never write on one connection. Doctrine DBAL and phpredis
 * (\Redis, \RedisCluster) connections are closed in the consumer before each fork: their state
 * is on the server, both sides reconnect lazily. A beanstalkd connection is not closed — beanstalkd
 * gives back every job reserved on a connection when it closes, which would hand running messages
 * to other consumers — so the child abandons its copy instead: it keeps the object alive until it
 * exits (no destructor writes on the socket) and gets a fresh client of its own. Knows those,
 * Pheanstalk 4, and Symfony Messenger's Doctrine, Redis and beanstalkd transports (the client
 * inside each); anything else is given as a callable that closes it before forks.
 */
final class ForkSafety
{
    /** @var list<object|callable> what to close before the next fork */
    private static array $closing = [];
    private static bool $hooked = false;
    /** @var list<object> clients a child abandoned: alive until it exits, never used */
    private static array $abandoned = [];

    /**
     * Refuses (naming the fix) what it cannot close, such as a PDO (PDO has no close(): pass the
     * DBAL connection or a callable that drops the object owning it).
     *
     * @param iterable<object|callable> $things
     * @return list<object|callable>
     */
    public static function check(iterable $things, string $what): array
    {
        $out = [];
        foreach ($things as $i => $thing) {
            if (!\is_object($thing) && !\is_callable($thing)) {
                throw new InvalidArgumentException("$what: #$i must be a connection or a callable that closes one, " . get_debug_type($thing) . ' given');
            }
            if ($thing instanceof \PDO) {
                throw new InvalidArgumentException("$what: #$i is a PDO, which cannot be closed while others hold it; pass the Doctrine DBAL connection that owns it, or a callable that closes it");
            }
            if (!\is_callable($thing) && \is_object($thing) && self::closer($thing) === null) {
                throw new InvalidArgumentException("$what: #$i: do not know how to close a " . $thing::class . '; pass a callable that closes it (Forklift knows Doctrine DBAL, \\Redis, \\RedisCluster, Pheanstalk and Messenger\'s Doctrine, Redis and beanstalkd transports)');
            }
            $out[] = $thing;
        }

        return $out;
    }

    /** Whether Forklift knows how to keep `$o`'s connection out of children (see the class). */
    public static function knows(object $o): bool
    {
        return self::closer($o) !== null;
    }

    /**
     * From now on, closes `$things` before every fork (replacing what an earlier call gave).
     *
     * @param list<object|callable> $things from {@see check()}
     */
    public static function closeBeforeForks(array $things): void
    {
        self::$closing = $things;
        if (!self::$hooked) {
            self::$hooked = true;
            \Forklift\on_fork(prepare: static fn () => self::closeAll(), child: static fn () => self::abandonAll());
        }
    }

    public static function closeAll(): void
    {
        foreach (self::$closing as $thing) {
            $close = \is_object($thing) ? self::closer($thing) : null;
            ($close ?? $thing)();
        }
    }

    /** In a new child: the beanstalkd clients it inherited are swapped for fresh ones. */
    public static function abandonAll(): void
    {
        foreach (self::$closing as $thing) {
            if ($thing instanceof \Symfony\Component\Messenger\Bridge\Beanstalkd\Transport\BeanstalkdTransport) {
                $connection = Transports::property($thing, 'connection');
                $client = \is_object($connection) ? Transports::property($connection, 'client') : null;
                if ($client instanceof \Pheanstalk\Pheanstalk) {
                    (new \ReflectionProperty($connection, 'client'))->setValue($connection, self::fresh($client));
                }
            } elseif ($thing instanceof \Pheanstalk\Pheanstalk) {
                // Given directly: the same object must work in the child, on a socket of its own.
                $inner = Transports::property($thing, 'connection');
                if (\is_object($inner)) {
                    self::$abandoned[] = $inner;
                    (new \ReflectionProperty($thing, 'connection'))->setValue($thing, new \Pheanstalk\Connection(Transports::property($inner, 'factory')));
                    (new \ReflectionProperty($thing, 'using'))->setValue($thing, \Pheanstalk\Contract\PheanstalkInterface::DEFAULT_TUBE);
                    (new \ReflectionProperty($thing, 'watching'))->setValue($thing, [\Pheanstalk\Contract\PheanstalkInterface::DEFAULT_TUBE => true]);
                }
            }
        }
    }

    /** A client to the same server as `$client`, not connected yet; `$client` kept alive, unused. */
    private static function fresh(\Pheanstalk\Pheanstalk $client): \Pheanstalk\Pheanstalk
    {
        self::$abandoned[] = $client;

        return new \Pheanstalk\Pheanstalk(new \Pheanstalk\Connection(Transports::property(Transports::property($client, 'connection'), 'factory')));
    }

    /** How to close `$o`, or null when it is nothing Forklift knows. */
    private static function closer(object $o): ?\Closure
    {
        return match (true) {
            $o instanceof \Doctrine\DBAL\Connection => static fn () => $o->close(),
            $o instanceof \Redis, $o instanceof \RedisCluster => static function () use ($o): void {
                try {
                    $o->close();
                } catch (\Throwable) {
                    // Already gone: reconnects lazily all the same.
                }
            },
            // Abandoned in the child instead (abandonAll()): closing would release reserved jobs.
            $o instanceof \Pheanstalk\Pheanstalk,
            $o instanceof \Symfony\Component\Messenger\Bridge\Beanstalkd\Transport\BeanstalkdTransport => static function (): void {
            },
            $o instanceof \Symfony\Component\Messenger\Bridge\Redis\Transport\RedisTransport,
            $o instanceof \Symfony\Component\Messenger\Bridge\Doctrine\Transport\DoctrineTransport => static function () use ($o): void {
                // The transport's connection, then the client inside it (the bridges keep both private).
                $connection = Transports::property($o, 'connection');
                foreach (['connection', 'driverConnection'] as $name) {
                    $inner = $connection === null ? null : Transports::property($connection, $name);
                    if (\is_object($inner) && ($close = self::closer($inner)) !== null) {
                        $close();
                    }
                }
            },
            default => null,
        };
    }
}
