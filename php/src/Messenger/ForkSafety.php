<?php

declare(strict_types=1);

namespace Forklift\Messenger;

use Forklift\InvalidArgumentException;

/**
 * Closes connections in the consumer before each fork, so that a message's child never writes
 * on a socket the consumer also uses (its receiver's, or a handler's shared DBAL connection):
 * both sides reconnect lazily on their next query. Knows Doctrine DBAL connections, phpredis
 * (\Redis, \RedisCluster), Pheanstalk 4, and Symfony Messenger's Doctrine, Redis and beanstalkd
 * transports (the connection inside each); anything else is given as a callable that closes it.
 */
final class ForkSafety
{
    /** @var list<object> what to close before the next fork */
    private static array $closing = [];
    private static bool $hooked = false;

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
            \Forklift\on_fork(prepare: static fn () => self::closeAll());
        }
    }

    public static function closeAll(): void
    {
        foreach (self::$closing as $thing) {
            $close = \is_object($thing) ? self::closer($thing) : null;
            ($close ?? $thing)();
        }
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
            $o instanceof \Pheanstalk\Pheanstalk => static function () use ($o): void {
                $c = self::property($o, 'connection');
                if ($c !== null && method_exists($c, 'disconnect')) {
                    $c->disconnect();
                }
            },
            $o instanceof \Symfony\Component\Messenger\Bridge\Redis\Transport\RedisTransport,
            $o instanceof \Symfony\Component\Messenger\Bridge\Doctrine\Transport\DoctrineTransport,
            $o instanceof \Symfony\Component\Messenger\Bridge\Beanstalkd\Transport\BeanstalkdTransport => static function () use ($o): void {
                // The transport's connection, then the client inside it (the bridges keep both private).
                $connection = self::property($o, 'connection');
                foreach (['connection', 'driverConnection', 'client'] as $name) {
                    $inner = $connection === null ? null : self::property($connection, $name);
                    if (\is_object($inner) && ($close = self::closer($inner)) !== null) {
                        $close();
                    }
                }
            },
            default => null,
        };
    }

    private static function property(object $o, string $name): mixed
    {
        for ($class = new \ReflectionClass($o); $class !== false; $class = $class->getParentClass()) {
            if ($class->hasProperty($name)) {
                $p = $class->getProperty($name);
                if ($p->isInitialized($o)) {
                    return $p->getValue($o);
                }

                return null;
            }
        }

        return null;
    }
}
