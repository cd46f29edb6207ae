<?php

declare(strict_types=1);

namespace Forklift\Queue;

/**
 * A real broker's queue as a {@see Consumer} uses it: receive a message, then settle it exactly
 * once (ack, retry or bury), keeping it alive while its handler runs. Delivery is at least once:
 * a message that is not settled (its consumer died, or fell silent past the broker's lease) is
 * delivered again, to this or another consumer.
 *
 * Connections are opened lazily. A broker is used by one process: a forked child that inherits
 * it calls {@see abandon()} (the Consumer does, in an on_fork child hook), so the child never
 * talks on its parent's socket.
 */
interface Broker
{
    /**
     * The next message, or null when none came within `$wait` seconds (0: do not wait).
     * The message is leased to this consumer until it is settled.
     */
    public function receive(float $wait = 0.0): ?Message;

    /** The message was handled: remove it from the queue for good. */
    public function ack(Message $message): void;

    /** Deliver the message again in `$delay` seconds (it keeps its attempt count). */
    public function retry(Message $message, float $delay, string $cause): void;

    /** Set the message aside for an operator, with why (see docs/queues.md: beanstalkd kick, Redis dead list). */
    public function bury(Message $message, string $cause): void;

    /**
     * Called often (several times per lease) while the message's handler runs; renews the lease
     * when it is due (beanstalkd: touch after half the TTR; Redis: claims the entry again).
     * Returns false when this consumer no longer holds the message (it was handed to another).
     */
    public function keepAlive(Message $message): bool;

    /** Closes the connection (the next call opens a new one). Leases the server ties to the connection end with it. */
    public function close(): void;

    /** In a forked child: forgets the inherited connection without a word on it; a later call opens the child's own. */
    public function abandon(): void;

    /** Where it reads from, for logs: "beanstalkd 127.0.0.1:11300 tube mail". */
    public function describe(): string;
}
