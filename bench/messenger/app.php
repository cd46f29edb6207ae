<?php

/*
 * The Messenger application of bench/messenger.php (section 6 of `make bench`): one Redis
 * transport "async" (Symfony Messenger 5.4's, from Debian) at BENCH_MESSENGER_DSN, and a handler
 * that does nothing but append "SEQ HRTIME PID\n" to BENCH_MESSENGER_LOG with one write() (O_APPEND:
 * lines of concurrent processes never mix), so that the benchmark can count the messages handled and
 * see when the first and the last one were. No retry, no failure transport: a message whose handler
 * fails is rejected (deleted), and the benchmark sees it missing.
 *
 * Returns a Forklift\Messenger\App, for `bin/forklift consume bench/messenger/app.php async`; the
 * baseline (plain Symfony\Component\Messenger\Worker) uses its bus, receivers and dispatcher.
 */

declare(strict_types=1);

namespace Forklift\Bench\Messenger;

require_once '/usr/share/php/Symfony/Component/Messenger/autoload.php';
require_once '/usr/share/php/Symfony/Component/EventDispatcher/autoload.php';
require_once '/usr/share/php/Symfony/Component/DependencyInjection/autoload.php';
require_once '/usr/share/php/Symfony/Component/Console/autoload.php';
require_once \dirname(__DIR__, 2) . '/php/autoload.php';

use Forklift\Messenger\App;
use Symfony\Component\EventDispatcher\EventDispatcher;
use Symfony\Component\Messenger\Bridge\Redis\Transport\RedisTransportFactory;
use Symfony\Component\Messenger\Handler\HandlersLocator;
use Symfony\Component\Messenger\MessageBus;
use Symfony\Component\Messenger\Middleware\HandleMessageMiddleware;
use Symfony\Component\Messenger\Transport\Serialization\PhpSerializer;

if (!class_exists(Tiny::class, false)) {
    /** The message: its number in the round. */
    final class Tiny
    {
        public function __construct(public readonly int $seq)
        {
        }
    }

    /** The handler: one line, one write(). */
    final class TinyHandler
    {
        public function __construct(private readonly string $log)
        {
        }

        public function __invoke(Tiny $m): void
        {
            file_put_contents($this->log, $m->seq . ' ' . hrtime(true) . ' ' . getmypid() . "\n", FILE_APPEND);
        }
    }
}

return (static function (): App {
    $dsn = (string) getenv('BENCH_MESSENGER_DSN');
    $log = (string) getenv('BENCH_MESSENGER_LOG');
    if ($dsn === '' || $log === '') {
        throw new \RuntimeException('bench/messenger/app.php needs BENCH_MESSENGER_DSN and BENCH_MESSENGER_LOG');
    }
    $transport = (new RedisTransportFactory())->createTransport($dsn, [], new PhpSerializer());
    $bus = new MessageBus([new HandleMessageMiddleware(new HandlersLocator([
        Tiny::class => [new TinyHandler($log)],
    ]))]);

    return new App($bus, ['async' => $transport], new EventDispatcher());
})();
