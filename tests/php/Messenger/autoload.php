<?php

// What the consumer tests' application needs, from Debian's packages and the repository.
require_once '/usr/share/php/Symfony/Component/Messenger/autoload.php';
require_once '/usr/share/php/Symfony/Component/Messenger/Bridge/Beanstalkd/autoload.php';
require_once '/usr/share/php/Symfony/Component/EventDispatcher/autoload.php';
require_once '/usr/share/php/Symfony/Component/DependencyInjection/autoload.php';
require_once '/usr/share/php/Symfony/Component/Console/autoload.php';
require_once '/usr/share/php/Symfony/Component/Cache/autoload.php';
require_once '/usr/share/php/Doctrine/DBAL/autoload.php';
require_once '/usr/share/php/Pheanstalk/autoload.php';
require_once dirname(__DIR__, 3) . '/php/autoload.php';
require_once __DIR__ . '/Fixtures.php';

/** A transport from a DSN: redis://, beanstalkd://, or mysql:// (Doctrine on MariaDB, table per DSN's queue_name). */
function forklift_test_transport(string $dsn, array &$close): Symfony\Component\Messenger\Transport\TransportInterface
{
    $serializer = new Symfony\Component\Messenger\Transport\Serialization\PhpSerializer();
    if (str_starts_with($dsn, 'redis://')) {
        return (new Symfony\Component\Messenger\Bridge\Redis\Transport\RedisTransportFactory())->createTransport($dsn, [], $serializer);
    }
    if (str_starts_with($dsn, 'beanstalkd://')) {
        return (new Symfony\Component\Messenger\Bridge\Beanstalkd\Transport\BeanstalkdTransportFactory())->createTransport($dsn, [], $serializer);
    }
    if (str_starts_with($dsn, 'mysql://')) {
        parse_str((string) parse_url($dsn, PHP_URL_QUERY), $q);
        $dbal = Doctrine\DBAL\DriverManager::getConnection(['url' => preg_replace('/\?.*$/', '', $dsn), 'driver' => 'pdo_mysql']);
        $config = Symfony\Component\Messenger\Bridge\Doctrine\Transport\Connection::buildConfiguration('doctrine://default?' . http_build_query($q));
        $close[] = $dbal;
        $GLOBALS['forklift_test_dbal'] = $dbal;
        return new Symfony\Component\Messenger\Bridge\Doctrine\Transport\DoctrineTransport(
            new Symfony\Component\Messenger\Bridge\Doctrine\Transport\Connection($config, $dbal),
            $serializer,
        );
    }
    throw new InvalidArgumentException("no test transport for $dsn");
}
