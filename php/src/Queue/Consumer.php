<?php

declare(strict_types=1);

namespace Forklift\Queue;

use Forklift\Daemon;
use Forklift\InvalidArgumentException;
use Forklift\JobResult;
use Forklift\JobRun;

/**
 * Consumes a {@see Broker}'s queue on a {@see Daemon}: each message is handled in a supervised
 * child of its own (`$handler(string $body, Message $message)`), at most `$workers` at once.
 * The consumer (the dispatcher) receives only while a slot is free, keeps running messages alive
 * at the broker, and settles each by how its child ended: returned → ack; threw, or died (fatal
 * error, out of memory, a signal, `exit()`, the `$timeout`) → retried after `$retryDelay` until
 * the message has had `$maxAttempts` deliveries, then buried with the cause (logged at error
 * level and counted). A {@see MessageRejectedException} buries at once.
 *
 * ```php
 * $d = new Forklift\Daemon('mailer');
 * (new Consumer(new Beanstalkd('127.0.0.1', 11300, tube: 'mail'), fn (string $body) => send(json_decode($body, true)),
 *     name: 'mail', workers: 4, timeout: 60, maxAttempts: 3, retryDelay: 5))->attach($d);
 * return $d;
 * ```
 *
 * Counters on the daemon (status, metrics): `queue_messages{queue, outcome}` with outcome acked,
 * retried, buried or unsettled (the broker refused the settlement: it delivers the message
 * again), `queue_keepalive_lost{queue}`, and the histogram `queue_message{queue}` of handling times.
 * It does not produce messages, order them, or deduplicate them: delivery is at least once.
 */
final class Consumer
{
    /** @var \Closure(string, Message): mixed */
    private \Closure $handler;
    private ?Daemon $daemon = null;
    private bool $polling = false;
    /** @var array<int, array{Message, float}> running messages by run id, with when they started */
    private array $running = [];

    /**
     * @param callable    $handler     called as $handler(string $body, Message $message) in the message's child; what it returns is ignored
     * @param string      $name        the daemon job's name (process titles, status) and the `queue` label of the counters
     * @param int         $workers     messages handled at once, 1 to 1024
     * @param float|null  $timeout     seconds a message's child may run: then TERM, `$grace`, KILL; the attempt failed
     * @param int         $maxAttempts deliveries before a failing message is buried, 1 or more
     * @param float       $retryDelay  seconds before a failed message is delivered again (beanstalkd: whole seconds)
     * @param float       $poll        seconds between receives while slots are free and the queue was empty
     * @param object|null $logger      a PSR-3 logger (anything with log($level, $message, $context)); default: lines on stderr
     */
    public function __construct(
        private readonly Broker $broker,
        mixed $handler,
        private readonly string $name = 'queue',
        private readonly int $workers = 1,
        private readonly ?float $timeout = null,
        private readonly ?float $grace = null,
        private readonly int $maxAttempts = 3,
        private readonly float $retryDelay = 5.0,
        private readonly float $poll = 0.25,
        private readonly ?object $logger = null,
    ) {
        $what = 'Forklift\\Queue\\Consumer';
        if (!\is_callable($handler)) {
            throw new InvalidArgumentException("$what: \$handler must be callable as fn (string \$body, Message \$message), " . get_debug_type($handler) . ' given');
        }
        if (!preg_match('/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/', $name)) {
            throw new InvalidArgumentException("$what: \$name names the daemon's job: 1 to 64 letters, digits, '-', '_' or '.' (not first '-' or '.'), \"$name\" given");
        }
        if ($workers < 1 || $workers > 1024) {
            throw new InvalidArgumentException("$what: \$workers must be 1 to 1024 (messages handled at once), $workers given");
        }
        if ($timeout !== null && !($timeout > 0)) {
            throw new InvalidArgumentException("$what: \$timeout must be more than 0 seconds, or null for none; $timeout given");
        }
        if ($maxAttempts < 1) {
            throw new InvalidArgumentException("$what: \$maxAttempts must be 1 or more (1: bury at the first failure), $maxAttempts given");
        }
        if (!($retryDelay >= 0) || is_infinite($retryDelay)) {
            throw new InvalidArgumentException("$what: \$retryDelay must be 0 or more seconds, $retryDelay given");
        }
        if (!($poll > 0) || is_infinite($poll)) {
            throw new InvalidArgumentException("$what: \$poll must be more than 0 seconds, $poll given");
        }
        if ($logger !== null && !method_exists($logger, 'log')) {
            throw new InvalidArgumentException("$what: \$logger must be a PSR-3 logger (a log(\$level, \$message, \$context) method), " . $logger::class . ' given');
        }
        $this->handler = \Closure::fromCallable($handler);
    }

    /**
     * Declares the consumer's job, timers and events on `$daemon`; it consumes while the daemon
     * runs. Returns the daemon.
     *
     * @throws InvalidArgumentException when this consumer is already attached, or the daemon refuses the job (a duplicate name)
     */
    public function attach(Daemon $daemon): Daemon
    {
        if ($this->daemon !== null) {
            throw new InvalidArgumentException("Forklift\\Queue\\Consumer \"$this->name\" is attached to a daemon already; make one Consumer per daemon");
        }
        $daemon->job($this->name, fn (Message $message) => $this->handleInChild($message), parallel: true, overlap: true, timeout: $this->timeout, grace: $this->grace);
        $this->daemon = $daemon;
        $daemon->every($this->poll, fn () => $this->poll(), name: "$this->name-receive");
        // Often enough for any lease: the broker renews only when one is half gone.
        $daemon->every(0.25, fn () => $this->keepAlive(), name: "$this->name-keepalive");
        $daemon->onStart(fn () => $this->poll());
        $daemon->onJobEnd(fn (JobRun $run) => $this->ended($run));
        $broker = $this->broker;
        \Forklift\on_fork(child: static fn () => $broker->abandon());

        return $daemon;
    }

    /** Receives while a worker slot is free and the queue has messages; each one starts a child. */
    private function poll(): void
    {
        if ($this->polling || $this->daemon === null) {
            return;
        }
        $this->polling = true;
        try {
            while (!$this->daemon->isStopping() && \count($this->running) < $this->workers) {
                $message = $this->broker->receive(0.0);
                if ($message === null) {
                    return;
                }
                $id = $this->daemon->start($this->name, [$message], label: "message $message->id (attempt $message->attempts)");
                if ($id === null) {
                    // The daemon began to stop in this turn: straight back to the queue.
                    $this->settle($message, 'retry', 'the consumer is stopping', 0.0);

                    return;
                }
                $this->running[$id] = [$message, microtime(true)];
            }
        } finally {
            $this->polling = false;
        }
    }

    /** In the message's child. */
    private function handleInChild(Message $message): null
    {
        ($this->handler)($message->body, $message);

        return null;
    }

    private function keepAlive(): void
    {
        foreach ($this->running as [$message]) {
            try {
                if (!$this->broker->keepAlive($message)) {
                    $this->log('warning', "$this->name: message $message->id is no longer held by this consumer (its lease ran out before the keep-alive): it may be handled twice");
                    $this->daemon?->count('queue_keepalive_lost', ['queue' => $this->name]);
                }
            } catch (\Throwable $e) {
                $this->log('warning', "$this->name: keep-alive of message $message->id failed: {$e->getMessage()}");
            }
        }
    }

    private function ended(JobRun $run): void
    {
        if (!isset($this->running[$run->id()])) {
            return;
        }
        [$message, $started] = $this->running[$run->id()];
        unset($this->running[$run->id()]);
        $result = $run->result();
        $this->daemon?->observe('queue_message', $result?->duration() ?? microtime(true) - $started, ['queue' => $this->name]);
        if ($result === null) {
            $this->settle($message, 'retry', 'its child did not start (the log says why)', 0.0);
        } elseif ($result->ok()) {
            $this->settle($message, 'ack', '', 0.0);
        } else {
            $cause = self::cause($result);
            $rejected = ($e = $result->exception()) !== null && is_a($e->className(), MessageRejectedException::class, true);
            if ($rejected || $message->attempts >= $this->maxAttempts) {
                $this->settle($message, 'bury', $cause, 0.0);
            } else {
                $this->settle($message, 'retry', $cause, $this->retryDelay);
            }
        }
        $this->poll();
    }

    /** @param 'ack'|'retry'|'bury' $how */
    private function settle(Message $message, string $how, string $cause, float $delay): void
    {
        $which = "$this->name: message $message->id (attempt $message->attempts of $this->maxAttempts)";
        try {
            match ($how) {
                'ack' => $this->broker->ack($message),
                'retry' => $this->broker->retry($message, $delay, $cause),
                'bury' => $this->broker->bury($message, $cause),
            };
            $outcome = ['ack' => 'acked', 'retry' => 'retried', 'bury' => 'buried'][$how];
            match ($how) {
                'ack' => null,
                'retry' => $this->log('warning', "$which failed, retried in {$delay} s: $cause"),
                'bury' => $this->log('error', "$which buried in {$this->broker->describe()}: $cause"),
            };
        } catch (\Throwable $e) {
            // The broker still has it leased: it delivers it again when the lease ends.
            $outcome = 'unsettled';
            $this->log('error', "$which: could not $how it ({$e->getMessage()}); the broker will deliver it again");
        }
        $this->daemon?->count('queue_messages', ['queue' => $this->name, 'outcome' => $outcome]);
    }

    /** The child's end in one line: "signal: killed by signal 11 (SIGSEGV)". */
    private static function cause(JobResult $result): string
    {
        return $result->outcome() . ': ' . ($result->cause() ?? 'no cause given');
    }

    private function log(string $level, string $line): void
    {
        if ($this->logger !== null) {
            $this->logger->log($level, $line, ['queue' => $this->name]);

            return;
        }
        fwrite(\STDERR, date('Y-m-d\TH:i:s') . " $level: $line\n");
    }
}
