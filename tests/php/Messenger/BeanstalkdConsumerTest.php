<?php

declare(strict_types=1);

namespace Forklift\Tests\Messenger;

use Forklift\Tests\Support\Beanstalkd;

require_once __DIR__ . '/ConsumerTestCase.php';

/** forklift:consume on Symfony's beanstalkd transport, against a real beanstalkd on loopback. */
final class BeanstalkdConsumerTest extends ConsumerTestCase
{
    private static ?Beanstalkd $server = null;
    private string $prefix;

    public static function setUpBeforeClass(): void
    {
        self::$server = new Beanstalkd();
    }

    public static function tearDownAfterClass(): void
    {
        self::$server?->stop();
        self::$server = null;
    }

    protected function setUp(): void
    {
        parent::setUp();
        $this->prefix = bin2hex(random_bytes(4));
    }

    protected function dsn(string $name): string
    {
        return self::$server->dsn() . "?tube_name=$this->prefix-$name&timeout=0";
    }
}
