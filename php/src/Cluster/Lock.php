<?php

declare(strict_types=1);

namespace Forklift\Cluster;

/**
 * The leader lock of a daemon that runs on several hosts (`$daemon->leader($lock)`): whoever
 * holds it runs the schedule (cron lines, `every` timers); the others stand by. The dispatcher
 * calls these from its loop, never from a job's child, and treats an exception as "not held".
 *
 * An implementation must let the lock go when its holder dies (a connection the server drops, a
 * TTL), never block for long (the dispatcher's loop waits meanwhile), and keep its connection
 * to the process that opened it: a forked child that inherits it must not use or close it.
 */
interface Lock
{
    /** Takes the lock if it is free, without waiting; true if this process holds it now. */
    public function acquire(): bool;

    /** Whether this process still holds the lock (renewing it, for a lock with a TTL). */
    public function held(): bool;

    /** Gives the lock back (if held). */
    public function release(): void;

    /** Who holds the lock ("host:pid"), or null when it is free or that is not known. */
    public function holder(): ?string;
}
