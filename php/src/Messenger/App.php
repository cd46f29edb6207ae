<?php

declare(strict_types=1);

namespace Forklift\Messenger;

use Forklift\InvalidArgumentException;
use Forklift\Messenger\Command\ConsumeCommand;
use Forklift\Messenger\Command\StopWorkersCommand;
use Psr\Cache\CacheItemPoolInterface;
use Psr\Log\LoggerInterface;
use Symfony\Component\DependencyInjection\ServiceLocator;
use Symfony\Component\EventDispatcher\EventDispatcher;
use Symfony\Component\EventDispatcher\EventDispatcherInterface;
use Symfony\Component\Messenger\MessageBusInterface;
use Symfony\Component\Messenger\Transport\Receiver\ReceiverInterface;

/**
 * What `bin/forklift consume APP.php` needs from an application without a Symfony kernel: APP.php
 * returns one. The bus, the receivers by transport name, the event dispatcher with the app's
 * Messenger listeners (retry, failure transport, error details), the logger, the connections to
 * close before each fork, and the restart-signal cache pool `stop-workers` sets. See docs/symfony.md.
 */
final class App
{
    /** @var array<string, ReceiverInterface> */
    public readonly array $receivers;
    public readonly EventDispatcherInterface $events;

    /**
     * @param array<string, ReceiverInterface> $receivers by transport name
     * @param iterable<object|callable> $closeBeforeFork
     */
    public function __construct(
        public readonly MessageBusInterface $bus,
        array $receivers,
        ?EventDispatcherInterface $events = null,
        public readonly ?LoggerInterface $logger = null,
        public readonly iterable $closeBeforeFork = [],
        public readonly ?CacheItemPoolInterface $restartSignal = null,
    ) {
        foreach ($receivers as $name => $r) {
            if (!\is_string($name) || !$r instanceof ReceiverInterface) {
                throw new InvalidArgumentException('Forklift\\Messenger\\App: $receivers maps transport names to receivers, as [\'async\' => $transport]; ' . get_debug_type($r) . ' given for ' . var_export($name, true));
            }
        }
        $this->receivers = $receivers;
        $this->events = $events ?? new EventDispatcher();
    }

    public function consumeCommand(): ConsumeCommand
    {
        $locator = new ServiceLocator(array_map(static fn (ReceiverInterface $r) => static fn () => $r, $this->receivers));

        return new ConsumeCommand($this->bus, $locator, $this->events, $this->logger, array_keys($this->receivers), closeBeforeFork: $this->closeBeforeFork);
    }

    public function stopWorkersCommand(): StopWorkersCommand
    {
        return new StopWorkersCommand($this->restartSignal);
    }
}
