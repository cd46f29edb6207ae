<?php

declare(strict_types=1);

namespace Forklift\Messenger;

use Forklift\JobResult;

/**
 * A message's child died before its bus returned: a fatal error, memory exhaustion, a signal
 * (a segfault), `exit()`, or the consumer's `--timeout`. The message fails with this (inside a
 * HandlerFailedException, so the retry strategy and the failure transport treat it as a handler's
 * failure); its message is the blackbox's cause, which ErrorDetailsStamp then carries.
 */
final class HandlerCrashedException extends \RuntimeException
{
    private ?JobResult $result;
    private string $outcome;

    public function __construct(string $message, ?JobResult $result = null)
    {
        parent::__construct($message);
        $this->result = $result;
        $this->outcome = $result?->outcome() ?? 'not started';
    }

    /** How the child ended (null when it never started, and after a trip through serialize()). */
    public function getResult(): ?JobResult
    {
        return $this->result;
    }

    /** "fatal", "signal", "timeout", "exit", ... as JobResult::outcome(); "not started". */
    public function getOutcome(): string
    {
        return $this->outcome;
    }

    public function __serialize(): array
    {
        // The JobResult stays in this process; the cause is in the message.
        return ['message' => $this->message, 'code' => $this->code, 'file' => $this->file, 'line' => $this->line, 'outcome' => $this->outcome];
    }

    public function __unserialize(array $data): void
    {
        $this->message = $data['message'];
        $this->code = $data['code'];
        $this->file = $data['file'];
        $this->line = $data['line'];
        $this->outcome = $data['outcome'] ?? 'unknown';
        $this->result = null;
    }
}
