<?php

declare(strict_types=1);

namespace Forklift\Messenger;

use Symfony\Component\Messenger\Exception\UnrecoverableExceptionInterface;

/** A {@see RemoteHandlerException} whose original was unrecoverable: the message is not retried. */
final class RemoteUnrecoverableException extends RemoteHandlerException implements UnrecoverableExceptionInterface
{
}
