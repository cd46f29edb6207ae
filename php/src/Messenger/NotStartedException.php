<?php

declare(strict_types=1);

namespace Forklift\Messenger;

use Symfony\Component\Messenger\Exception\RecoverableExceptionInterface;

/**
 * A message was received but its child never started (the fork failed: a process or memory
 * limit; or the consumer stopped first). Recoverable: the retry listener sends it back to its
 * transport whatever the retry count, so it is handed back, never lost.
 */
final class NotStartedException extends \RuntimeException implements RecoverableExceptionInterface
{
}
