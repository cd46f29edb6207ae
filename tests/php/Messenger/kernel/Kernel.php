<?php

declare(strict_types=1);

namespace Forklift\Tests\Messenger\Kernel;

use Symfony\Bundle\FrameworkBundle\FrameworkBundle;
use Symfony\Component\Config\Loader\LoaderInterface;
use Symfony\Component\DependencyInjection\ContainerBuilder;
use Symfony\Component\DependencyInjection\Reference;
use Symfony\Component\HttpKernel\Kernel as BaseKernel;

/**
 * A Symfony 5.4 application as a shop has one: FrameworkBundle with Messenger (a Redis transport
 * from FORKLIFT_TEST_REDIS, one retry without delay, a failure transport), the tests' handler,
 * and Forklift's bundle. Its cache lives in FORKLIFT_TEST_KERNEL_DIR.
 */
final class Kernel extends BaseKernel
{
    public function registerBundles(): iterable
    {
        return [new FrameworkBundle(), new \Forklift\Symfony\ForkliftBundle()];
    }

    public function registerContainerConfiguration(LoaderInterface $loader): void
    {
        $loader->load(static function (ContainerBuilder $c): void {
            $redis = (string) getenv('FORKLIFT_TEST_REDIS');
            $c->loadFromExtension('framework', [
                'secret' => 'forklift',
                'test' => false,
                'http_method_override' => false,
                'router' => ['utf8' => true, 'resource' => 'kernel::routes', 'type' => 'service'],
                'messenger' => [
                    'failure_transport' => 'failed',
                    'transports' => [
                        'async' => ['dsn' => "$redis/async/g/c", 'retry_strategy' => ['max_retries' => 1, 'delay' => 0]],
                        'failed' => "$redis/failed/g/c",
                    ],
                    'routing' => [\Forklift\Tests\Messenger\Job::class => 'async'],
                ],
            ]);
            $c->register(\Forklift\Tests\Messenger\JobHandler::class)
                ->setArguments([(string) getenv('FORKLIFT_TEST_LOG')])
                ->addTag('messenger.message_handler');
            $c->register('kernel.routes', \Symfony\Component\Routing\RouteCollection::class)->setPublic(true);
        });
    }

    public function getCacheDir(): string
    {
        return getenv('FORKLIFT_TEST_KERNEL_DIR') . '/cache';
    }

    public function getLogDir(): string
    {
        return getenv('FORKLIFT_TEST_KERNEL_DIR') . '/log';
    }

    public function getProjectDir(): string
    {
        return __DIR__;
    }
}
