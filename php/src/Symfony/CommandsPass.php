<?php

declare(strict_types=1);

namespace Forklift\Symfony;

use Forklift\Messenger\Command\ConsumeCommand;
use Forklift\Messenger\Command\StopWorkersCommand;
use Symfony\Component\DependencyInjection\Compiler\CompilerPassInterface;
use Symfony\Component\DependencyInjection\ContainerBuilder;
use Symfony\Component\DependencyInjection\ContainerInterface;
use Symfony\Component\DependencyInjection\Definition;
use Symfony\Component\DependencyInjection\Exception\InvalidArgumentException;
use Symfony\Component\DependencyInjection\Reference;

/** Defines Forklift's two commands with the arguments of Messenger's own (see ForkliftBundle). */
final class CommandsPass implements CompilerPassInterface
{
    public function process(ContainerBuilder $container): void
    {
        if (!$container->hasDefinition('console.command.messenger_consume_messages')) {
            // No Messenger in this application (framework.messenger not enabled): nothing to consume.
            return;
        }
        $args = array_values($container->getDefinition('console.command.messenger_consume_messages')->getArguments());
        // (routable bus, receiver locator, event dispatcher, logger, receiver names, reset listener, bus ids)
        $args = array_pad(\array_slice($args, 0, 7), 7, null);
        $args[4] ??= [];
        $args[6] ??= [];

        $close = [];
        if ($container->hasParameter('doctrine.connections')) {
            foreach ((array) $container->getParameter('doctrine.connections') as $id) {
                $close[] = new Reference($id);
            }
        }
        if ($container->hasParameter('forklift.close_before_fork')) {
            foreach ((array) $container->getParameter('forklift.close_before_fork') as $id) {
                if (!\is_string($id) || !$container->has($id)) {
                    throw new InvalidArgumentException(sprintf('forklift.close_before_fork: "%s" is not a service of this application; list the ids of the connections (DBAL, \Redis) that handlers share with the consumer.', \is_string($id) ? $id : get_debug_type($id)));
                }
                $close[] = new Reference($id);
            }
        }
        $args[7] = $close;

        $container->setDefinition('forklift.command.consume', (new Definition(ConsumeCommand::class, $args))
            ->addTag('console.command', ['command' => 'forklift:consume']));
        $container->setDefinition('forklift.command.stop_workers', (new Definition(StopWorkersCommand::class, [
            new Reference('cache.messenger.restart_workers_signal', ContainerInterface::NULL_ON_INVALID_REFERENCE),
        ]))->addTag('console.command', ['command' => 'forklift:stop-workers']));
    }
}
