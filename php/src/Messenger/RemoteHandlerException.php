<?php

declare(strict_types=1);

namespace Forklift\Messenger;

/**
 * Stands in, in the consumer, for an exception a message's child ended with that could not be
 * sent back as itself (it did not serialize): its class name, message and code.
 */
class RemoteHandlerException extends \RuntimeException
{
    public function __construct(
        private readonly string $originalClass,
        string $message,
        int $code = 0,
    ) {
        parent::__construct("$originalClass: $message", $code);
    }

    /** The class of the exception the child ended with. */
    public function getOriginalClass(): string
    {
        return $this->originalClass;
    }
}
