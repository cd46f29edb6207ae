<?php

declare(strict_types=1);

namespace Forklift\Symfony;

use Symfony\Component\DependencyInjection\Compiler\PassConfig;
use Symfony\Component\DependencyInjection\ContainerBuilder;
use Symfony\Component\HttpKernel\Bundle\Bundle;

/**
 * The Symfony bundle of Forklift: `forklift:consume` and `forklift:stop-workers` in
 * `bin/console`, given the services Messenger's own `messenger:consume` and
 * `messenger:stop-workers` get. Enable it in config/bundles.php:
 *
 *     Forklift\Symfony\ForkliftBundle::class => ['all' => true],
 *
 * Connections closed before each fork: the Doctrine transports' and Redis transports' own (always),
 * every DBAL connection of DoctrineBundle (`doctrine.connections`), and the service ids listed in
 * the container parameter `forklift.close_before_fork`. See docs/symfony.md.
 */
final class ForkliftBundle extends Bundle
{
    public function build(ContainerBuilder $container): void
    {
        // After MessengerPass has filled in Messenger's command, before console commands are collected.
        $container->addCompilerPass(new CommandsPass(), PassConfig::TYPE_BEFORE_REMOVING, 10);
    }
}
