<?php

declare(strict_types=1);

namespace Forklift\Messenger;

use Symfony\Component\Messenger\Exception\RecoverableExceptionInterface;

/** A {@see RemoteHandlerException} whose original was recoverable: the message is always retried. */
final class RemoteRecoverableException extends RemoteHandlerException implements RecoverableExceptionInterface
{
}
