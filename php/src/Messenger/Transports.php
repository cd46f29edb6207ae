<?php

declare(strict_types=1);

namespace Forklift\Messenger;

use Symfony\Component\Messenger\Bridge\Beanstalkd\Transport\BeanstalkdTransport;
use Symfony\Component\Messenger\Bridge\Doctrine\Transport\DoctrineTransport;
use Symfony\Component\Messenger\Bridge\Redis\Transport\RedisTransport;

/**
 * What Forklift reads from Symfony's own transports, whose connections are private: the client
 * inside (to close it before forks) and after how long they deliver a message again that is still
 * being handled. Read by reflection, for Messenger 5.4's bridges; anything unknown reads as null.
 *
 * @internal
 */
final class Transports
{
    /**
     * Seconds after which the transport delivers a message again while it is still handled
     * (Redis and Doctrine: redeliver_timeout; beanstalkd: ttr), or null when unknown.
     */
    public static function redeliverAfter(object $transport): ?float
    {
        $connection = self::property($transport, 'connection');
        if (!\is_object($connection)) {
            return null;
        }

        return match (true) {
            $transport instanceof RedisTransport => ($ms = self::property($connection, 'redeliverTimeout')) === null ? null : $ms / 1000,
            $transport instanceof DoctrineTransport => isset(self::property($connection, 'configuration')['redeliver_timeout']) ? (float) self::property($connection, 'configuration')['redeliver_timeout'] : null,
            $transport instanceof BeanstalkdTransport => ($ttr = self::property($connection, 'ttr')) === null ? null : (float) $ttr,
            default => null,
        };
    }

    /**
     * The transport's id of this delivery (TransportMessageIdStamp, or the id of the transport's
     * received stamp: Redis, Doctrine, beanstalkd), or null.
     */
    public static function deliveryId(\Symfony\Component\Messenger\Envelope $envelope): ?string
    {
        $id = $envelope->last(\Symfony\Component\Messenger\Stamp\TransportMessageIdStamp::class)?->getId();
        if ($id !== null) {
            return (string) $id;
        }
        foreach ($envelope->all() as $class => $stamps) {
            if (str_ends_with($class, 'ReceivedStamp') && method_exists($class, 'getId')) {
                return (string) end($stamps)->getId();
            }
        }

        return null;
    }

    /**
     * The transport offered a message again that is still being handled here. Messenger's Redis
     * connection takes any pending message of its consumer for a leftover of a crash and reads
     * the pending list (from the oldest) until it is empty: with several messages in flight it
     * would offer the same running one over and over and no new ones. Back to new messages; it
     * looks at the pending ones again after its claim_interval.
     */
    public static function skipRedelivered(object $transport): void
    {
        if (!$transport instanceof RedisTransport) {
            return;
        }
        $connection = self::property($transport, 'connection');
        if (\is_object($connection) && property_exists($connection, 'couldHavePendingMessages')) {
            $p = new \ReflectionProperty($connection, 'couldHavePendingMessages');
            $p->setValue($connection, false);
        }
    }

    /** A property of `$o` whatever its visibility (null when it has none of that name). */
    public static function property(object $o, string $name): mixed
    {
        for ($class = new \ReflectionClass($o); $class !== false; $class = $class->getParentClass()) {
            if ($class->hasProperty($name)) {
                $p = $class->getProperty($name);

                return $p->isInitialized($o) ? $p->getValue($o) : null;
            }
        }

        return null;
    }
}
