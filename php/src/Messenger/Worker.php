<?php

declare(strict_types=1);

namespace Forklift\Messenger;

use Forklift\Daemon;
use Forklift\InvalidArgumentException;
use Forklift\JobRun;
use Psr\Log\LoggerInterface;
use Symfony\Contracts\EventDispatcher\EventDispatcherInterface;
use Symfony\Component\Messenger\Envelope;
use Symfony\Component\Messenger\Event\WorkerMessageFailedEvent;
use Symfony\Component\Messenger\Event\WorkerMessageHandledEvent;
use Symfony\Component\Messenger\Event\WorkerMessageReceivedEvent;
use Symfony\Component\Messenger\Event\WorkerRunningEvent;
use Symfony\Component\Messenger\Event\WorkerStartedEvent;
use Symfony\Component\Messenger\Event\WorkerStoppedEvent;
use Symfony\Component\Messenger\Exception\HandlerFailedException;
use Symfony\Component\Messenger\Exception\RejectRedeliveredMessageException;
use Symfony\Component\Messenger\Exception\RuntimeException;
use Symfony\Component\Messenger\MessageBusInterface;
use Symfony\Component\Messenger\Stamp\ConsumedByWorkerStamp;
use Symfony\Component\Messenger\Stamp\NonSendableStampInterface;
use Symfony\Component\Messenger\Stamp\ReceivedStamp;
use Symfony\Component\Messenger\Transport\Receiver\QueueReceiverInterface;
use Symfony\Component\Messenger\Transport\Receiver\ReceiverInterface;
use Symfony\Component\Messenger\Worker as MessengerWorker;

/**
 * Symfony Messenger's worker, with each message handled in a forked child that Forklift
 * supervises. The consumer (this process) receives envelopes from its receivers in priority
 * order, dispatches Messenger's worker events, and acks or rejects each message by how its child
 * ended; the child dispatches the envelope on the bus (it inherits the booted application) and
 * reports back the stamps its handlers added or the exception they threw. A child that dies (a
 * fatal error, memory exhausted, a segfault, `exit()`, the `timeout`) fails its message with a
 * {@see HandlerCrashedException} that names the cause: retried per the retry strategy, then sent
 * to the failure transport, never redelivered forever. See docs/symfony.md.
 *
 * Its loop is a {@see Daemon}'s (named `$name`): the consumer has a pid file and a status socket
 * (`bin/forklift status --pid-file=...`), process titles naming the transport and the message
 * class, metrics of messages by class and outcome; TERM or INT let the running messages finish
 * (up to `$stopTimeout`) and stop.
 */
class Worker extends MessengerWorker
{
    /** @var array<string, ReceiverInterface> */
    private array $receivers;
    private ?Daemon $daemon = null;
    private bool $shouldStop = false;
    private bool $polling = false;
    /** @var array<string, array{Envelope, string, float}> running messages by run ("run:ID") or pool task ("task:ID"): envelope, transport, start */
    private array $inFlight = [];
    /** @var array<string, string> run keys by transport and transport message id */
    private array $inFlightIds = [];
    private ?\Forklift\Pool $pool = null;
    /** @var list<array{Envelope, string}> received in a batch, waiting for a free slot */
    private array $waiting = [];
    private float $backoffUntil = 0.0;
    private int $receiveFailures = 0;
    private int $received = 0;
    private ?int $limit = null;
    /** @var list<string>|null */
    private ?array $queueNames = null;
    private ?\Throwable $receiveFailure = null;
    private bool $receivedOnce = false;
    /** @var list<object|callable> */
    private array $closeBeforeFork;

    /**
     * @param array<string, ReceiverInterface> $receivers by transport name, in priority order
     * @param int $workers messages handled at once (each in a child of its own)
     * @param ?float $timeout seconds a message's child may run: then TERM, `$grace`, KILL; the message fails
     * @param ?float $softTimeout seconds after which a Forklift\TimeoutException is thrown inside the handler
     * @param float $stopTimeout seconds running messages may take to finish once the consumer stops
     * @param iterable<object|callable> $closeBeforeFork connections closed before each fork (see {@see ForkSafety}); the receivers' own are always closed
     * @param ?string $pidFile default: one per consumer process in Forklift's run directory ({@see Consumers})
     * @param bool $prefork handle messages in `$workers` long-lived workers (a Forklift\Pool) instead of a
     *             fresh child each: faster for small messages; a worker that dies is replaced, its message fails
     * @param ?int $maxMessagesPerWorker prefork: recycle a worker after this many messages
     * @param int|string|null $workerMemoryLimit prefork: recycle a worker whose memory passes this ("256M")
     */
    public function __construct(
        array $receivers,
        private readonly MessageBusInterface $bus,
        private readonly ?EventDispatcherInterface $eventDispatcher = null,
        private readonly ?LoggerInterface $logger = null,
        private readonly int $workers = 1,
        private readonly ?float $timeout = null,
        private readonly ?float $grace = null,
        private readonly ?float $softTimeout = null,
        private readonly float $stopTimeout = 30.0,
        iterable $closeBeforeFork = [],
        private readonly string $name = 'consume',
        private readonly ?string $pidFile = null,
        private readonly bool $prefork = false,
        private readonly ?int $maxMessagesPerWorker = null,
        private readonly int|string|null $workerMemoryLimit = null,
    ) {
        $what = 'Forklift\\Messenger\\Worker';
        if ($receivers === []) {
            throw new InvalidArgumentException("$what: give at least one receiver, as ['async' => \$transport]");
        }
        foreach ($receivers as $transport => $receiver) {
            if (!\is_string($transport) || $transport === '') {
                throw new InvalidArgumentException("$what: receivers are keyed by their transport's name, as ['async' => \$transport]");
            }
            if (!$receiver instanceof ReceiverInterface) {
                throw new InvalidArgumentException("$what: receiver \"$transport\" must implement " . ReceiverInterface::class . ', ' . get_debug_type($receiver) . ' given');
            }
        }
        if ($workers < 1 || $workers > 1024) {
            throw new InvalidArgumentException("$what: \$workers must be 1 to 1024, $workers given");
        }
        if (!$prefork && ($maxMessagesPerWorker !== null || $workerMemoryLimit !== null)) {
            throw new InvalidArgumentException("$what: \$maxMessagesPerWorker and \$workerMemoryLimit recycle prefork workers: give prefork: true too (without it each message has a fresh child)");
        }
        if (!preg_match('/^[A-Za-z0-9_.-]{1,100}$/', $name)) {
            throw new InvalidArgumentException("$what: \$name names the pid file and process titles: 1 to 100 of A-Z a-z 0-9 _ . -, \"$name\" given");
        }
        $this->receivers = $receivers;
        // The receivers' own connections (the transports Forklift knows; see docs/symfony.md).
        $known = array_values(array_filter($receivers, ForkSafety::knows(...)));
        $this->closeBeforeFork = [...$known, ...ForkSafety::check($closeBeforeFork, "$what: \$closeBeforeFork")];
        parent::__construct($receivers, $bus, $eventDispatcher, $logger);
    }

    /**
     * Consumes until stopped (a stop listener, TERM/INT, `stop()`). Options as Messenger's:
     * `sleep` (microseconds between polls when no message came), `queues`; and Forklift's
     * `limit` (receive at most this many messages; with `workers` > 1 Messenger's listener alone
     * would let more in).
     */
    public function run(array $options = []): void
    {
        $options += ['sleep' => 1_000_000];
        $sleep = $options['sleep'] / 1e6;
        if (!is_numeric($options['sleep']) || $sleep <= 0) {
            throw new InvalidArgumentException('Forklift\\Messenger\\Worker::run(): sleep must be more than 0 microseconds, ' . var_export($options['sleep'], true) . ' given');
        }
        $this->limit = isset($options['limit']) ? (int) $options['limit'] : null;
        $this->queueNames = $options['queues'] ?? null;
        $this->getMetadata()->set(['queueNames' => $this->queueNames]);
        if ($this->queueNames) {
            foreach ($this->receivers as $transport => $receiver) {
                if (!$receiver instanceof QueueReceiverInterface) {
                    throw new RuntimeException(sprintf('Receiver for "%s" does not implement "%s".', $transport, QueueReceiverInterface::class));
                }
            }
        }

        $this->shouldStop = false;
        $this->received = 0;
        $this->receivedOnce = false;
        $this->receiveFailure = null;
        $this->inFlight = [];
        $this->inFlightIds = [];
        $this->waiting = [];
        $this->backoffUntil = 0.0;
        $this->receiveFailures = 0;
        $this->warnAboutRedelivery();
        self::warmUp();
        ForkSafety::closeBeforeForks($this->closeBeforeFork);
        try {
            $daemon = new Daemon($this->name, pidFile: $this->pidFile ?? Consumers::pidFile($this->name), stopTimeout: $this->stopTimeout, logger: $this->logger);
            foreach ($this->receivers as $transport => $_) {
                $daemon->job(
                    $transport,
                    fn (Envelope $envelope) => $this->handleInChild($envelope, $transport),
                    parallel: true,
                    overlap: true,
                    timeout: $this->timeout,
                    grace: $this->grace,
                    softTimeout: $this->softTimeout,
                );
            }
            // Consuming scales out: with a leader lock the poll runs on standby hosts too.
            $daemon->every($sleep, fn () => $this->poll(), name: 'receive', everyHost: true);
            $daemon->onStart(function (): void {
                $this->dispatchEvent(new WorkerStartedEvent($this));
                $this->poll();
            });
            $daemon->onJobEnd(fn (JobRun $run) => $this->ended('run:' . $run->id(), $run->result()));
            if ($this->prefork) {
                // Workers forked now: they inherit the application as it is, and serve many messages.
                $this->pool = new \Forklift\Pool(
                    fn (string $payload) => $this->handlePayload($payload),
                    workers: $this->workers,
                    timeout: $this->timeout,
                    grace: $this->grace,
                    softTimeout: $this->softTimeout,
                    maxJobs: $this->maxMessagesPerWorker,
                    maxMemory: $this->workerMemoryLimit,
                    name: $this->name,
                    prefetch: 1,
                );
                $this->pool->onResult(fn (\Forklift\JobResult $r, int $task) => $this->ended("task:$task", $r));
                $daemon->pool($this->pool);
            }
            $this->daemon = $daemon;
            $daemon->run();
            // What the stop left unsettled (prefork tasks killed at the stop timeout, a batch's
            // envelopes not started) goes back to its transport.
            foreach ($this->inFlight as [$envelope, $transport]) {
                $this->handBack($envelope, $transport, 'still running when the consumer stopped');
            }
            foreach ($this->waiting as [$envelope, $transport]) {
                $this->handBack($envelope, $transport, 'received in a batch and not started before the consumer stopped');
            }
            $this->inFlight = [];
            $this->waiting = [];
        } finally {
            ForkSafety::closeBeforeForks([]);
            $this->daemon = null;
            $this->pool = null;
        }
        $this->dispatchEvent(new WorkerStoppedEvent($this));
        if ($this->receiveFailure !== null) {
            throw $this->receiveFailure;
        }
    }

    /**
     * Loads, once in the consumer, the classes every child needs to dispatch and report: without
     * opcache (the CLI's default) each child would load and compile them again (~0.5 ms a
     * message, measured in `make bench` section 6).
     */
    private static function warmUp(): void
    {
        foreach ([
            \Symfony\Component\Messenger\Middleware\StackMiddleware::class,
            \Symfony\Component\Messenger\Middleware\HandleMessageMiddleware::class,
            \Symfony\Component\Messenger\Middleware\AddBusNameStampMiddleware::class,
            \Symfony\Component\Messenger\Middleware\DispatchAfterCurrentBusMiddleware::class,
            \Symfony\Component\Messenger\Middleware\FailedMessageProcessingMiddleware::class,
            \Symfony\Component\Messenger\Middleware\RejectRedeliveredMessageMiddleware::class,
            \Symfony\Component\Messenger\Middleware\SendMessageMiddleware::class,
            \Symfony\Component\Messenger\Handler\HandlerDescriptor::class,
            \Symfony\Component\Messenger\Handler\Acknowledger::class,
            \Symfony\Component\Messenger\Stamp\HandledStamp::class,
            \Symfony\Component\Messenger\Stamp\BusNameStamp::class,
            \Symfony\Component\Messenger\Stamp\HandlerArgumentsStamp::class,
            \Symfony\Component\Messenger\Stamp\FlushBatchHandlersStamp::class,
            \Symfony\Component\Messenger\Stamp\NoAutoAckStamp::class,
            \Symfony\Component\Messenger\Stamp\SentStamp::class,
            \Symfony\Component\Messenger\Exception\HandlerFailedException::class,
            \Symfony\Component\Messenger\Exception\NoHandlerForMessageException::class,
            \Psr\Log\LogLevel::class,
            Report::class,
        ] as $class) {
            class_exists($class) || interface_exists($class);
        }
    }

    public function stop(): void
    {
        if (!$this->shouldStop) {
            $this->logger?->info('Stopping worker.', ['transport_names' => $this->getMetadata()->getTransportNames()]);
        }
        $this->shouldStop = true;
        $this->daemon?->stop();
    }

    /** The daemon running this consumer (null when it does not run): status(), count(), ... */
    public function daemon(): ?Daemon
    {
        return $this->daemon;
    }

    /** Receives while a worker slot is free, from the first receiver that has a message. */
    private function poll(): void
    {
        if ($this->polling || $this->daemon === null) {
            return;
        }
        if (microtime(true) < $this->backoffUntil) {
            // The transport is down: no receive now, but the stop listeners (time limit, restart
            // signal) still get their idle turn.
            $this->dispatchEvent(new WorkerRunningEvent($this, true));

            return;
        }
        $this->polling = true;
        try {
            while (!$this->shouldStop && !$this->daemon->isStopping() && \count($this->inFlight) < $this->workers) {
                if ($this->limit !== null && $this->received >= $this->limit) {
                    if ($this->inFlight === []) {
                        // Everything received is settled: the limit is reached (whether or not a
                        // listener counted each one).
                        $this->stop();
                    }

                    return;
                }
                // Envelopes received in one batch (a receiver may return several) start first, as
                // slots free: never more at once than the workers, never more than the limit.
                if ($this->waiting !== []) {
                    [$envelope, $transport] = array_shift($this->waiting);
                    if (!$this->accept($envelope, $transport) && $this->waiting === []) {
                        // Only a message offered again while it runs: the next tick asks again.
                        return;
                    }
                    continue;
                }
                $got = false;
                foreach ($this->receivers as $transport => $receiver) {
                    $envelopes = $this->queueNames ? $receiver->getFromQueues($this->queueNames) : $receiver->get();
                    foreach ($envelopes as $envelope) {
                        $got = true;
                        $this->waiting[] = [$envelope, $transport];
                    }
                    if ($got) {
                        break;
                    }
                }
                $this->receivedOnce = true;
                $this->receiveFailures = 0;
                if (!$got) {
                    $this->dispatchEvent(new WorkerRunningEvent($this, true));

                    return;
                }
            }
        } catch (\Throwable $e) {
            if (!$this->receivedOnce) {
                // The first receive failed: a configuration error; the consumer ends with it.
                $this->receiveFailure = $e;
                $this->stop();

                return;
            }
            // The transport is down: poll again later and later (up to 30 s), not every tick.
            $wait = min(30.0, 0.5 * 2 ** min(6, $this->receiveFailures++));
            $this->backoffUntil = microtime(true) + $wait;
            $this->logger?->error('Receiving failed ({error}); trying again in {wait} s', ['error' => $e->getMessage(), 'wait' => $wait, 'exception' => $e]);
        } finally {
            $this->polling = false;
        }
    }

    /** Handles a received envelope; false when it was one already running here (offered again). */
    private function accept(Envelope $envelope, string $transport): bool
    {
        $key = self::key($envelope, $transport);
        if ($key !== null && isset($this->inFlightIds[$key])) {
            // The transport offered again a message a child of ours still handles (it ran past
            // the transport's redelivery timeout, or Redis re-reads its own pending list):
            // handling it twice at once helps nobody; its running child acks or rejects it.
            $this->logger?->debug('{class} from {transport} was offered again while it is still being handled (run {run}); skipped', ['class' => $envelope->getMessage()::class, 'transport' => $transport, 'run' => $this->inFlightIds[$key]]);
            Transports::skipRedelivered($this->receivers[$transport]);

            return false;
        }
        $event = new WorkerMessageReceivedEvent($envelope, $transport);
        try {
            $this->dispatchEvent($event);
        } catch (\Throwable $e) {
            // A listener of WorkerMessageReceivedEvent threw: the message fails with it (retried
            // by its strategy), rather than staying received and never settled.
            ++$this->received;
            $this->settledAtOnce($envelope, $transport, $e);

            return true;
        }
        $envelope = $event->getEnvelope();
        if (!$event->shouldHandle()) {
            return true;
        }
        ++$this->received;
        $envelope = $envelope->with(new ReceivedStamp($transport), new ConsumedByWorkerStamp());
        $class = $envelope->getMessage()::class;
        if ($this->pool !== null) {
            try {
                // The worker gets what crosses a transport (no receiver-side stamps); this process keeps
                // the envelope to ack or reject.
                $payload = serialize([$transport, $envelope->withoutStampsOfType(NonSendableStampInterface::class)]);
            } catch (\Throwable $e) {
                $this->settledAtOnce($envelope, $transport, new HandlerFailedException($envelope, [new \RuntimeException("The message cannot go to a prefork worker: it does not serialize ({$e->getMessage()})", 0, $e)]));

                return true;
            }
            try {
                $id = 'task:' . $this->pool->submit($payload)->id();
            } catch (\Forklift\ForkliftException $e) {
                // Too big for the pool's channel, or the pool cannot run it: this message fails, the consumer goes on.
                $this->settledAtOnce($envelope, $transport, new HandlerFailedException($envelope, [new \RuntimeException("The message cannot go to a prefork worker: {$e->getMessage()}", 0, $e)]));

                return true;
            }
        } else {
            $run = $this->daemon->start($transport, [$envelope], label: $class);
            if ($run === null) {
                // The consumer began to stop in this very turn: the message goes back to its transport.
                $this->handBack($envelope, $transport, 'the consumer is stopping');

                return true;
            }
            $id = "run:$run";
        }
        $this->inFlight[$id] = [$envelope, $transport, microtime(true)];
        if ($key !== null) {
            $this->inFlightIds[$key] = $id;
        }

        return true;
    }

    private static function key(Envelope $envelope, string $transport): ?string
    {
        $id = Transports::deliveryId($envelope);

        return $id === null ? null : $transport . "\0" . $id;
    }

    /** A message that runs longer than its transport's redelivery timeout is delivered again: say so at the start. */
    private function warnAboutRedelivery(): void
    {
        foreach ($this->receivers as $transport => $receiver) {
            $after = Transports::redeliverAfter($receiver);
            if ($after !== null && ($this->timeout === null || $this->timeout >= $after)) {
                $this->logger?->warning('Transport {transport} delivers a message again after {after} s while it is still handled, and this consumer\'s timeout is {timeout}: set --timeout below {after} s (or raise the transport\'s redeliver_timeout/ttr)', ['transport' => $transport, 'after' => $after, 'timeout' => $this->timeout === null ? 'none' : "$this->timeout s"]);
            }
        }
    }

    /** In a prefork worker: the message as the consumer sent it. */
    private function handlePayload(string $payload): string
    {
        [$transport, $envelope] = unserialize($payload);
        cli_set_process_title("forklift: $this->name worker - $transport - " . $envelope->getMessage()::class);
        try {
            return $this->handleInChild($envelope, $transport);
        } finally {
            cli_set_process_title("forklift: $this->name worker (idle)");
        }
    }

    /** In the message's child: dispatch it, report how it went. */
    private function handleInChild(Envelope $envelope, string $transport): string
    {
        if (\function_exists('pcntl_signal')) {
            // Messenger's SIGTERM listener may have set a PHP handler in the consumer: the child's
            // timeout must end it.
            pcntl_signal(\SIGTERM, \SIG_DFL);
            pcntl_signal(\SIGINT, \SIG_DFL);
        }
        // Exceptions go back serialized: without arguments in their traces they do.
        ini_set('zend.exception_ignore_args', '1');
        $before = Report::stampIds($envelope);
        try {
            return Report::handled($this->bus->dispatch($envelope), $before);
        } catch (\Throwable $e) {
            return Report::failed($e, $before);
        }
    }

    /** A message's child (or prefork task) ended with `$result` (null: it never started). */
    private function ended(string $id, ?\Forklift\JobResult $result): void
    {
        if (!isset($this->inFlight[$id])) {
            // Not one of this consumer's messages.
            return;
        }
        [$envelope, $transport, $started] = $this->inFlight[$id];
        unset($this->inFlight[$id]);
        if (($key = self::key($envelope, $transport)) !== null) {
            unset($this->inFlightIds[$key]);
        }
        $endedByStop = $result !== null && !$result->ok() && $this->daemon?->isStopping() && (
            // A child the stop timeout expired (not its own --timeout) ...
            ($result->timedOut() && ($this->timeout === null || $result->duration() < $this->timeout))
            // ... or a prefork worker killed with its pool at the stop timeout.
            || (str_starts_with($id, 'task:') && $result->signal() === \SIGKILL)
        );
        if ($endedByStop) {
            // Ended by the consumer's own stop timeout, not by the message's: not the handler's
            // failure. It goes back to its transport as it came, with no retry used up.
            $this->handBack($envelope, $transport, (string) $result->cause());

            return;
        }
        $report = $result !== null && $result->ok() ? Report::decode($result->value()) : null;
        if ($result === null) {
            $e = self::notStarted($envelope, 'its child did not start (the log says why)');
        } elseif ($report === null) {
            $e = self::crashed($envelope, $result);
        } else {
            $envelope = $report->envelope($envelope);
            $e = $report->exception($envelope);
        }
        $this->finish($envelope, $transport, $e, $result?->duration() ?? (microtime(true) - $started));
        if (!$this->shouldStop) {
            $this->dispatchEvent(new WorkerRunningEvent($this, false));
        }
        $this->poll();
    }

    /** A message that failed before any child: settled, and counted by the stop listeners as one handled. */
    private function settledAtOnce(Envelope $envelope, string $transport, \Throwable $e): void
    {
        $this->finish($envelope, $transport, $e, 0.0);
        if (!$this->shouldStop) {
            $this->dispatchEvent(new WorkerRunningEvent($this, false));
        }
    }

    /** A message the consumer's stop ended: sent to its transport again and the delivery rejected (or left for redelivery). */
    private function handBack(Envelope $envelope, string $transport, string $why): void
    {
        $receiver = $this->receivers[$transport];
        $class = $envelope->getMessage()::class;
        $outcome = 'handed back';
        try {
            if (!$receiver instanceof \Symfony\Component\Messenger\Transport\Sender\SenderInterface) {
                throw new \LogicException('the receiver cannot send');
            }
            $receiver->send($envelope->withoutStampsOfType(NonSendableStampInterface::class));
            $receiver->reject($envelope);
            $this->logger?->warning('{class} was not finished when the consumer stopped ({cause}): handed back to {transport}', ['class' => $class, 'cause' => $why, 'transport' => $transport]);
        } catch (\Throwable $e) {
            $outcome = 'unacknowledged';
            $this->logger?->warning('{class} was not finished when the consumer stopped ({cause}); left unacknowledged: {transport} delivers it again after its redelivery timeout ({error})', ['class' => $class, 'cause' => $why, 'transport' => $transport, 'error' => $e->getMessage()]);
        }
        $this->daemon?->count('messages', ['transport' => $transport, 'class' => $class, 'outcome' => $outcome]);
    }

    /** Acks or rejects as Messenger's worker does, with its events; counts the outcome. */
    private function finish(Envelope $envelope, string $transport, ?\Throwable $e, float $duration): void
    {
        $receiver = $this->receivers[$transport];
        $class = $envelope->getMessage()::class;
        $labels = ['transport' => $transport, 'class' => $class];
        try {
            if ($e !== null) {
                $rejectFirst = $e instanceof RejectRedeliveredMessageException;
                if ($rejectFirst) {
                    $receiver->reject($envelope);
                }
                if ($e instanceof HandlerFailedException) {
                    $envelope = $e->getEnvelope();
                }
                $failed = new WorkerMessageFailedEvent($envelope, $transport, $e);
                $this->dispatchEvent($failed);
                $envelope = $failed->getEnvelope();
                if (!$rejectFirst) {
                    $receiver->reject($envelope);
                }
                $outcome = $failed->willRetry() ? 'retried' : 'failed';
                $this->logger?->warning('{class} failed ({outcome}): {error}', ['class' => $class, 'outcome' => $outcome, 'error' => $e->getMessage(), 'transport' => $transport]);
            } else {
                $handled = new WorkerMessageHandledEvent($envelope, $transport);
                $this->dispatchEvent($handled);
                $envelope = $handled->getEnvelope();
                $this->logger?->info('{class} was handled successfully (acknowledging to transport).', ['class' => $class]);
                $receiver->ack($envelope);
                $outcome = 'handled';
            }
        } catch (\Throwable $ackFailure) {
            // The transport (or a listener) failed: the message is neither acked nor rejected, so
            // the transport delivers it again after its redelivery timeout.
            $this->logger?->error('{class} from {transport}: acknowledging failed ({error}); the transport will redeliver it', ['class' => $class, 'transport' => $transport, 'error' => $ackFailure->getMessage(), 'exception' => $ackFailure]);
            $outcome = 'unacknowledged';
        }
        $this->daemon?->count('messages', $labels + ['outcome' => $outcome]);
        $this->daemon?->observe('message', $duration, $labels);
    }

    /** A child that died: the message fails as a handler's failure, with the blackbox's cause. */
    private static function crashed(Envelope $envelope, \Forklift\JobResult $result): HandlerFailedException
    {
        $cause = $result->ok()
            ? 'it returned no report (it did not end through the consumer\'s code)'
            : ($result->cause() ?? $result->outcome());
        $why = $result->timedOut() ? "timed out: $cause" : $cause;

        return new HandlerFailedException($envelope, [new HandlerCrashedException("The handler's process (pid {$result->pid()}) died: $why", $result)]);
    }

    /** A message whose child never ran: handed back to its transport by the retry listener. */
    private static function notStarted(Envelope $envelope, string $why): HandlerFailedException
    {
        return new HandlerFailedException($envelope, [new NotStartedException("The message was not handled: $why")]);
    }

    private function dispatchEvent(object $event): void
    {
        $this->eventDispatcher?->dispatch($event);
    }
}
