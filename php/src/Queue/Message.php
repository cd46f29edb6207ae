<?php

declare(strict_types=1);

namespace Forklift\Queue;

/**
 * One message as a {@see Broker} delivered it: immutable. The handler gets it beside the body;
 * the broker gets it back to ack, retry or bury it.
 */
final class Message
{
    /**
     * @param string               $id       the broker's id (a beanstalkd job id, a Redis stream entry id)
     * @param string               $body     the payload, as the producer put it
     * @param int                  $attempts deliveries so far, this one included (1 on the first)
     * @param array<string, mixed> $data     the broker's own bookkeeping (TTR, priority, fields); not for handlers
     */
    public function __construct(
        public readonly string $id,
        public readonly string $body,
        public readonly int $attempts,
        public readonly array $data = [],
    ) {
    }
}
