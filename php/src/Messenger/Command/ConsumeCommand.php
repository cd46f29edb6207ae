<?php

declare(strict_types=1);

namespace Forklift\Messenger\Command;

use Forklift\Messenger\Worker;
use Psr\Container\ContainerInterface;
use Psr\Log\LoggerInterface;
use Symfony\Component\Console\Command\Command;
use Symfony\Component\Console\Exception\InvalidOptionException;
use Symfony\Component\Console\Exception\RuntimeException;
use Symfony\Component\Console\Input\InputArgument;
use Symfony\Component\Console\Input\InputInterface;
use Symfony\Component\Console\Input\InputOption;
use Symfony\Component\Console\Logger\ConsoleLogger;
use Symfony\Component\Console\Output\ConsoleOutputInterface;
use Symfony\Component\Console\Output\OutputInterface;
use Symfony\Component\Console\Style\SymfonyStyle;
use Symfony\Component\EventDispatcher\EventDispatcherInterface;
use Symfony\Component\Messenger\EventListener\ResetServicesListener;
use Symfony\Component\Messenger\EventListener\StopWorkerOnFailureLimitListener;
use Symfony\Component\Messenger\EventListener\StopWorkerOnMemoryLimitListener;
use Symfony\Component\Messenger\EventListener\StopWorkerOnMessageLimitListener;
use Symfony\Component\Messenger\EventListener\StopWorkerOnTimeLimitListener;
use Symfony\Component\Messenger\MessageBusInterface;
use Symfony\Component\Messenger\RoutableMessageBus;

/**
 * `forklift:consume`: `messenger:consume` with each message handled in a supervised child. Same
 * arguments as Messenger's command (so a container passes it the same services), the same
 * receivers and options, plus `--workers`, `--timeout`, `--grace`, `--soft-timeout`,
 * `--stop-timeout`, `--name`, `--pid-file`. See docs/symfony.md.
 */
class ConsumeCommand extends Command
{
    protected static $defaultName = 'forklift:consume';
    protected static $defaultDescription = 'Consume messages, each handled in a child process that Forklift supervises';

    /**
     * @param list<string> $receiverNames
     * @param list<string> $busIds
     * @param iterable<object|callable> $closeBeforeFork connections closed before each fork
     */
    public function __construct(
        private readonly MessageBusInterface $routableBus,
        private readonly ContainerInterface $receiverLocator,
        private readonly EventDispatcherInterface $eventDispatcher,
        private readonly ?LoggerInterface $logger = null,
        private readonly array $receiverNames = [],
        private readonly ?ResetServicesListener $resetServicesListener = null,
        private readonly array $busIds = [],
        private readonly iterable $closeBeforeFork = [],
    ) {
        parent::__construct();
    }

    protected function configure(): void
    {
        $default = \count($this->receiverNames) === 1 ? [current($this->receiverNames)] : [];
        $this->setDefinition([
            new InputArgument('receivers', InputArgument::IS_ARRAY, 'Names of the receivers/transports to consume in order of priority', $default),
            new InputOption('limit', 'l', InputOption::VALUE_REQUIRED, 'Limit the number of received messages'),
            new InputOption('failure-limit', 'f', InputOption::VALUE_REQUIRED, 'The number of failed messages the worker can consume'),
            new InputOption('memory-limit', 'm', InputOption::VALUE_REQUIRED, 'The memory limit the worker (the receiving process) can consume'),
            new InputOption('time-limit', 't', InputOption::VALUE_REQUIRED, 'The time limit in seconds the worker can handle new messages'),
            new InputOption('sleep', null, InputOption::VALUE_REQUIRED, 'Seconds to sleep before asking for new messages after no messages were found', 1),
            new InputOption('bus', 'b', InputOption::VALUE_REQUIRED, 'Name of the bus to which received messages should be dispatched (if not passed, bus is determined automatically)'),
            new InputOption('queues', null, InputOption::VALUE_REQUIRED | InputOption::VALUE_IS_ARRAY, 'Limit receivers to only consume from the specified queues'),
            new InputOption('no-reset', null, InputOption::VALUE_NONE, 'Do not reset container services after each message'),
            new InputOption('workers', 'w', InputOption::VALUE_REQUIRED, 'Messages handled at once, each in a child process of its own', 1),
            new InputOption('timeout', null, InputOption::VALUE_REQUIRED, 'Seconds a message may take: then its child gets TERM, --grace, KILL, and the message fails'),
            new InputOption('grace', null, InputOption::VALUE_REQUIRED, 'Seconds between TERM and KILL at the timeout (default 5)'),
            new InputOption('soft-timeout', null, InputOption::VALUE_REQUIRED, 'Seconds after which a Forklift\TimeoutException is thrown inside the handler'),
            new InputOption('stop-timeout', null, InputOption::VALUE_REQUIRED, 'Seconds running messages may take to finish once the consumer is asked to stop', 30),
            new InputOption('name', null, InputOption::VALUE_REQUIRED, 'The consumer\'s name in process titles, logs and its pid file', 'consume'),
            new InputOption('pid-file', null, InputOption::VALUE_REQUIRED, 'The pid file (default: consumer-NAME-PID.pid in Forklift\'s run directory)'),
            new InputOption('prefork', null, InputOption::VALUE_NONE, 'Handle messages in --workers long-lived worker processes instead of a fresh child each (faster for small messages)'),
            new InputOption('max-messages-per-worker', null, InputOption::VALUE_REQUIRED, 'With --prefork: replace a worker after this many messages'),
            new InputOption('worker-memory-limit', null, InputOption::VALUE_REQUIRED, 'With --prefork: replace a worker whose memory passes this (as 256M)'),
        ]);
        $this->setHelp(<<<'EOF'
The <info>%command.name%</info> command consumes messages like <info>messenger:consume</info>, each message
handled in a forked child process: a fatal error, memory exhaustion, a segfault or a hang
past <info>--timeout</info> fails that message (retried per its retry strategy, then sent to the
failure transport with the cause in its ErrorDetailsStamp), never the consumer.

    <info>php %command.full_name% async --workers=4 --timeout=300 --memory-limit=256M</info>

Receivers are consumed in the order given (the first that has a message wins):

    <info>php %command.full_name% ui_job import_export_job data_maintenance_job</info>
EOF);
    }

    protected function execute(InputInterface $input, OutputInterface $output): int
    {
        $receivers = [];
        $names = $input->getArgument('receivers');
        if ($names === []) {
            throw new RuntimeException('Name the receivers to consume, in order of priority' . ($this->receiverNames ? ': ' . implode(', ', $this->receiverNames) : ''));
        }
        foreach ($names as $name) {
            if (!$this->receiverLocator->has($name)) {
                throw new RuntimeException(sprintf('The receiver "%s" does not exist.', $name) . ($this->receiverNames ? sprintf(' Valid receivers are: %s.', implode(', ', $this->receiverNames)) : ''));
            }
            $receivers[$name] = $this->receiverLocator->get($name);
        }
        if ($this->resetServicesListener !== null && !$input->getOption('no-reset')) {
            $this->eventDispatcher->addSubscriber($this->resetServicesListener);
        }

        $stopsWhen = [];
        $limit = null;
        if (null !== $l = $input->getOption('limit')) {
            $limit = self::positiveInt($l, 'limit');
            $stopsWhen[] = "processed $limit messages";
            $this->eventDispatcher->addSubscriber(new StopWorkerOnMessageLimitListener($limit, $this->logger));
        }
        if (null !== $f = $input->getOption('failure-limit')) {
            $f = self::positiveInt($f, 'failure-limit');
            $stopsWhen[] = "reached $f failed messages";
            $this->eventDispatcher->addSubscriber(new StopWorkerOnFailureLimitListener($f, $this->logger));
        }
        if (null !== $m = $input->getOption('memory-limit')) {
            $stopsWhen[] = "exceeded $m of memory";
            $this->eventDispatcher->addSubscriber(new StopWorkerOnMemoryLimitListener(self::bytes($m, 'memory-limit'), $this->logger));
        }
        if (null !== $t = $input->getOption('time-limit')) {
            $t = self::positiveInt($t, 'time-limit');
            $stopsWhen[] = "been running for {$t}s";
            $this->eventDispatcher->addSubscriber(new StopWorkerOnTimeLimitListener($t, $this->logger));
        }
        $stopsWhen[] = 'received a stop signal via the forklift:stop-workers or messenger:stop-workers command, TERM or INT';

        $timeout = self::seconds($input->getOption('timeout'), 'timeout');
        $grace = self::seconds($input->getOption('grace'), 'grace');
        $softTimeout = self::seconds($input->getOption('soft-timeout'), 'soft-timeout');
        $sleep = self::seconds($input->getOption('sleep'), 'sleep');
        if ($sleep !== null && $sleep < 0.001) {
            throw new InvalidOptionException(sprintf('Option "sleep" must be at least 0.001 seconds, "%s" passed.', $input->getOption('sleep')));
        }
        if ($grace !== null && $timeout === null) {
            throw new InvalidOptionException('Option "grace" needs --timeout (it is the time between TERM and KILL at the timeout).');
        }
        if ($softTimeout !== null && $timeout !== null && $softTimeout >= $timeout) {
            throw new InvalidOptionException(sprintf('Option "soft-timeout" (%s s) must be shorter than --timeout (%s s): the handler gets its exception first, the kill after.', $softTimeout, $timeout));
        }

        $bus = $this->routableBus;
        if (null !== $busName = $input->getOption('bus')) {
            if (!$bus instanceof RoutableMessageBus) {
                throw new InvalidOptionException('--bus needs a RoutableMessageBus; this consumer has one bus only');
            }
            $bus = $bus->getMessageBus($busName);
        }
        // Without the application's logger: warnings and errors on stderr, the rest with -v/-vv/-vvv.
        $logger = $this->logger ?? new ConsoleLogger($output instanceof ConsoleOutputInterface ? $output->getErrorOutput() : $output);
        $worker = new Worker(
            $receivers,
            $bus,
            $this->eventDispatcher,
            $logger,
            workers: self::positiveInt($input->getOption('workers'), 'workers'),
            timeout: $timeout,
            grace: $grace,
            softTimeout: $softTimeout,
            stopTimeout: self::seconds($input->getOption('stop-timeout'), 'stop-timeout') ?? 30.0,
            closeBeforeFork: $this->closeBeforeFork,
            name: (string) $input->getOption('name'),
            pidFile: $input->getOption('pid-file'),
            prefork: (bool) $input->getOption('prefork'),
            maxMessagesPerWorker: ($m = $input->getOption('max-messages-per-worker')) === null ? null : self::positiveInt($m, 'max-messages-per-worker'),
            workerMemoryLimit: ($m = $input->getOption('worker-memory-limit')) === null ? null : self::bytes($m, 'worker-memory-limit'),
        );
        $options = ['sleep' => (int) max(1, ($sleep ?? 1.0) * 1e6)];
        if ($limit !== null) {
            $options['limit'] = $limit;
        }
        if ($queues = $input->getOption('queues')) {
            $options['queues'] = $queues;
        }

        $io = new SymfonyStyle($input, $output instanceof ConsoleOutputInterface ? $output->getErrorOutput() : $output);
        $io->success(sprintf('Consuming messages from transport%s "%s", %d at a time, %s.', \count($receivers) > 1 ? 's' : '', implode(', ', $names), (int) $input->getOption('workers'), $input->getOption('prefork') ? 'in prefork workers' : 'each in a child process'));
        $last = array_pop($stopsWhen);
        $io->comment('The worker will automatically exit once it has ' . ($stopsWhen ? implode(', ', $stopsWhen) . ' or ' : '') . $last . '.');

        $worker->run($options);

        return 0;
    }

    private static function positiveInt(mixed $v, string $option): int
    {
        if (!is_numeric($v) || (int) $v != $v || (int) $v <= 0) {
            throw new InvalidOptionException(sprintf('Option "%s" must be a positive integer, "%s" passed.', $option, $v));
        }

        return (int) $v;
    }

    private static function seconds(mixed $v, string $option): ?float
    {
        if ($v === null) {
            return null;
        }
        if (!is_numeric($v) || (float) $v <= 0 || !is_finite((float) $v)) {
            throw new InvalidOptionException(sprintf('Option "%s" must be a number of seconds more than 0, "%s" passed.', $option, $v));
        }

        return (float) $v;
    }

    /** "128M" as Messenger reads it: K, M, G suffixes. */
    private static function bytes(string $v, string $option): int
    {
        $n = strtolower(trim($v));
        if (!preg_match('/^\d+[kmg]?$/', $n)) {
            throw new InvalidOptionException(sprintf('Option "%s" must be a number of bytes with an optional K, M or G suffix (as 128M), "%s" passed.', $option, $v));
        }
        $bytes = (int) $n;
        switch (substr($n, -1)) {
            case 'g': $bytes *= 1024;
                // no break
            case 'm': $bytes *= 1024;
                // no break
            case 'k': $bytes *= 1024;
        }

        return $bytes;
    }
}
