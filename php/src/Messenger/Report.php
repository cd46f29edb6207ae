<?php

declare(strict_types=1);

namespace Forklift\Messenger;

use Symfony\Component\Messenger\Envelope;
use Symfony\Component\Messenger\Exception\HandlerFailedException;
use Symfony\Component\Messenger\Exception\RecoverableExceptionInterface;
use Symfony\Component\Messenger\Exception\UnrecoverableExceptionInterface;
use Symfony\Component\Messenger\Stamp\HandledStamp;
use Symfony\Component\Messenger\Stamp\StampInterface;

/**
 * What a message's child tells the consumer: the stamps its bus added (handled stamps), or the
 * exception it ended with. Objects do not cross a fork back, so each stamp and exception travels
 * serialized on its own; one that does not serialize is replaced by what the parent needs (a
 * handled stamp without its result; for an exception its class, message, code and whether it is
 * recoverable or unrecoverable, as {@see RemoteHandlerException}).
 *
 * @internal the consumer's wire format between its children and itself
 */
final class Report
{
    /** Past this size of serialized stamps, handlers' results stay in the child. */
    private const MAX_RESULTS = 8 << 20;

    /**
     * @param list<string> $stamps serialized stamps
     * @param ?array{wrapped: bool, stamps: list<string>, errors: list<array<string, mixed>>} $failure
     */
    private function __construct(
        public readonly array $stamps,
        public readonly ?array $failure,
    ) {
    }

    /**
     * In the child, before dispatching: the stamps the envelope already has (the consumer has them
     * too; only the ones the bus adds travel back).
     *
     * @return array<int, true>
     */
    public static function stampIds(Envelope $envelope): array
    {
        $ids = [];
        foreach ($envelope->all() as $stamps) {
            foreach ($stamps as $stamp) {
                $ids[spl_object_id($stamp)] = true;
            }
        }

        return $ids;
    }

    /**
     * In the child: the bus returned this envelope.
     *
     * @param array<int, true> $before from {@see stampIds()}
     */
    public static function handled(Envelope $envelope, array $before): string
    {
        $report = serialize(new self(self::stampsOf($envelope, $before), null));
        if (\strlen($report) <= self::MAX_RESULTS) {
            return $report;
        }
        // Handlers' results this big are not the consumer's business (and could pass the
        // channel's frame limit, failing a handled message): their handled stamps come back without them.
        $bare = $envelope->withoutAll(HandledStamp::class);
        foreach ($envelope->all(HandledStamp::class) as $stamp) {
            $bare = $bare->with(new HandledStamp(null, $stamp->getHandlerName()));
        }

        return serialize(new self(self::stampsOf($bare, $before), null));
    }

    /**
     * In the child: the bus threw `$e`.
     *
     * @param array<int, true> $before from {@see stampIds()}
     */
    public static function failed(\Throwable $e, array $before): string
    {
        if ($e instanceof HandlerFailedException) {
            $failure = [
                'wrapped' => true,
                'stamps' => self::stampsOf($e->getEnvelope(), $before),
                'errors' => array_map(self::portable(...), array_values($e->getNestedExceptions())),
            ];
        } else {
            $failure = ['wrapped' => false, 'stamps' => [], 'errors' => [self::portable($e)]];
        }

        return serialize(new self([], $failure));
    }

    /** In the parent: the child's return value, or null when it is not a report. */
    public static function decode(mixed $value): ?self
    {
        if (!\is_string($value)) {
            return null;
        }
        $report = @unserialize($value, ['allowed_classes' => [self::class]]);

        return $report instanceof self ? $report : null;
    }

    /** The envelope the parent acks or fails: its own envelope with the stamps the child's bus added. */
    public function envelope(Envelope $received): Envelope
    {
        $stamps = $this->failure === null ? $this->stamps : $this->failure['stamps'];

        return $received->with(...self::revive($stamps));
    }

    /** The exception to fail the message with, as the bus threw it in the child; null when handled. */
    public function exception(Envelope $received): ?\Throwable
    {
        if ($this->failure === null) {
            return null;
        }
        $errors = array_map(self::rebuild(...), $this->failure['errors']);
        if ($this->failure['wrapped']) {
            return new HandlerFailedException($this->envelope($received), $errors);
        }

        return $errors[0] ?? new RemoteHandlerException(\RuntimeException::class, 'the child reported a failure without an exception', 0);
    }

    /**
     * @param array<int, true> $before
     * @return list<string>
     */
    private static function stampsOf(Envelope $envelope, array $before): array
    {
        $out = [];
        foreach ($envelope->all() as $stamps) {
            foreach ($stamps as $stamp) {
                if (isset($before[spl_object_id($stamp)])) {
                    continue;
                }
                try {
                    $out[] = serialize($stamp);
                } catch (\Throwable) {
                    if ($stamp instanceof HandledStamp) {
                        // The handler's result does not serialize: the handler's name still does.
                        $out[] = serialize(new HandledStamp(null, $stamp->getHandlerName()));
                    }
                }
            }
        }

        return $out;
    }

    /**
     * @param list<string> $stamps
     * @return list<StampInterface>
     */
    private static function revive(array $stamps): array
    {
        $out = [];
        foreach ($stamps as $s) {
            if (!self::safe($s)) {
                continue; // a HandledStamp's result whose class runs code when revived: left in the child
            }
            try {
                $stamp = @unserialize($s);
            } catch (\Throwable) {
                continue;
            }
            if ($stamp instanceof StampInterface) {
                $out[] = $stamp;
            }
        }

        return $out;
    }

    /** @return array<string, mixed> */
    private static function portable(\Throwable $e): array
    {
        try {
            $serialized = serialize($e);
        } catch (\Throwable) {
            $serialized = null;
        }
        if ($serialized !== null && \strlen($serialized) > self::MAX_RESULTS) {
            $serialized = null; // too big to carry: the stand-in with a shortened message
        }

        return [
            'serialized' => $serialized,
            'class' => $e::class,
            'message' => \strlen($e->getMessage()) > 65536 ? substr($e->getMessage(), 0, 65536) . '… (shortened)' : $e->getMessage(),
            'code' => \is_int($e->getCode()) ? $e->getCode() : 0,
            'recoverable' => $e instanceof RecoverableExceptionInterface,
            'unrecoverable' => $e instanceof UnrecoverableExceptionInterface,
            'where' => $e->getFile() . ':' . $e->getLine(),
            'trace' => substr($e->getTraceAsString(), 0, 65536),
        ];
    }

    /**
     * Whether reviving `$serialized` in the consumer runs no application code: every class in it
     * is known, and PHP's own or has none of __wakeup, __unserialize, __destruct, Serializable's
     * unserialize, nor an internal parent with a serialization of its own (a message's code runs
     * in its child only). Symfony's and Forklift\\Messenger's classes are trusted.
     */
    private static function safe(string $serialized): bool
    {
        preg_match_all('/[OC]:\d+:"([^"]+)"/', $serialized, $m);
        foreach (array_unique($m[1]) as $class) {
            if (str_starts_with($class, 'Symfony\\Component\\') || str_starts_with($class, 'Forklift\\Messenger\\')) {
                continue;
            }
            if (!class_exists($class)) {
                // Autoloaded if need be (a class file declares; an exception class the child threw
                // is usually not loaded in the consumer yet): unknown here, not revived.
                return false;
            }
            $r = new \ReflectionClass($class);
            if ($r->isInternal()) {
                continue;
            }
            foreach (['__wakeup', '__unserialize', '__destruct', 'unserialize'] as $method) {
                if ($r->hasMethod($method) && !$r->getMethod($method)->isInternal()) {
                    return false;
                }
            }
            // A user class built on an internal one with its own serialization (SplObjectStorage,
            // ArrayObject, ...) could have its methods called while revived; exceptions are fine.
            for ($parent = $r->getParentClass(); $parent !== false; $parent = $parent->getParentClass()) {
                if ($parent->isInternal() && !\in_array($parent->getName(), ['Exception', 'Error', 'ErrorException', 'stdClass'], true)
                    && !$parent->isSubclassOf(\Throwable::class)) {
                    return false;
                }
            }
        }

        return true;
    }

    /** @param array<string, mixed> $e */
    private static function rebuild(array $e): \Throwable
    {
        if ($e['serialized'] !== null && self::safe($e['serialized'])) {
            try {
                $t = unserialize($e['serialized']);
                if ($t instanceof \Throwable) {
                    return $t;
                }
            } catch (\Throwable) {
                // Falls through to the stand-in.
            }
        }
        $detail = "{$e['message']} (in the child at {$e['where']})";

        return match (true) {
            $e['unrecoverable'] => new RemoteUnrecoverableException($e['class'], $detail, $e['code']),
            $e['recoverable'] => new RemoteRecoverableException($e['class'], $detail, $e['code']),
            default => new RemoteHandlerException($e['class'], $detail, $e['code']),
        };
    }
}
