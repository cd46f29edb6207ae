<?php

/*
 * The Messenger application of the consumer tests, for `bin/forklift consume` and in-process use:
 * transports from FORKLIFT_TEST_TRANSPORTS (JSON: name => DSN; redis://, beanstalkd://, mysql://
 * for Doctrine on MariaDB), failures to the transport named "failed" after FORKLIFT_TEST_RETRIES
 * retries (no delay), handled lines in FORKLIFT_TEST_LOG.
 */

declare(strict_types=1);

use Forklift\Messenger\App;
use Symfony\Component\Messenger\Bridge\Beanstalkd\Transport\BeanstalkdTransportFactory;
use Symfony\Component\Messenger\Bridge\Doctrine\Transport\Connection as DoctrineConnection;
use Symfony\Component\Messenger\Bridge\Doctrine\Transport\DoctrineTransport;
use Symfony\Component\Messenger\Bridge\Redis\Transport\RedisTransportFactory;
use Symfony\Component\Messenger\EventListener\AddErrorDetailsStampListener;
use Symfony\Component\Messenger\EventListener\SendFailedMessageForRetryListener;
use Symfony\Component\Messenger\EventListener\SendFailedMessageToFailureTransportListener;
use Symfony\Component\Messenger\Handler\HandlersLocator;
use Symfony\Component\Messenger\MessageBus;
use Symfony\Component\Messenger\Middleware\HandleMessageMiddleware;
use Symfony\Component\Messenger\Retry\MultiplierRetryStrategy;
use Symfony\Component\Messenger\Transport\Serialization\PhpSerializer;
use Symfony\Component\DependencyInjection\ServiceLocator;
use Symfony\Component\EventDispatcher\EventDispatcher;

require_once __DIR__ . '/autoload.php';

return (static function (): App {
    $transports = json_decode((string) getenv('FORKLIFT_TEST_TRANSPORTS'), true, 8, JSON_THROW_ON_ERROR);
    $log = (string) getenv('FORKLIFT_TEST_LOG');
    $retries = (int) (getenv('FORKLIFT_TEST_RETRIES') ?: 0);
    $built = [];
    $close = [];
    foreach ($transports as $name => $dsn) {
        $built[$name] = forklift_test_transport($dsn, $close);
    }
    $bus = new MessageBus([new HandleMessageMiddleware(new HandlersLocator([
        Forklift\Tests\Messenger\Job::class => [new Forklift\Tests\Messenger\JobHandler($log)],
        Forklift\Tests\Messenger\Other::class => [new Forklift\Tests\Messenger\OtherHandler($log)],
    ]))]);
    $senders = new ServiceLocator(array_map(static fn ($t) => static fn () => $t, $built));
    $strategies = new ServiceLocator(array_map(static fn () => static fn () => new MultiplierRetryStrategy($retries, 0), $built));
    $events = new EventDispatcher();
    $events->addSubscriber(new AddErrorDetailsStampListener());
    $events->addSubscriber(new SendFailedMessageForRetryListener($senders, $strategies));
    if (isset($built['failed'])) {
        $failed = $built['failed'];
        $events->addSubscriber(new SendFailedMessageToFailureTransportListener(new ServiceLocator(
            array_map(static fn () => static fn () => $failed, array_diff_key($built, ['failed' => 1])),
        )));
    }

    $restart = null;
    if ((string) getenv('FORKLIFT_TEST_CACHE_DIR') !== '') {
        $restart = new Symfony\Component\Cache\Adapter\FilesystemAdapter('', 0, (string) getenv('FORKLIFT_TEST_CACHE_DIR'));
        $events->addSubscriber(new Symfony\Component\Messenger\EventListener\StopWorkerOnRestartSignalListener($restart));
    }

    return new App($bus, $built, $events, closeBeforeFork: $close, restartSignal: $restart);
})();
