<?php

declare(strict_types=1);

namespace Forklift\Queue;

/**
 * Thrown by a handler for a message that can never succeed (bad data): the consumer buries it at
 * once with this message as the cause, without the retries it gives other failures.
 */
class MessageRejectedException extends \RuntimeException
{
}
