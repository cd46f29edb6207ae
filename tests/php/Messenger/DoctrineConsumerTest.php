<?php

declare(strict_types=1);

namespace Forklift\Tests\Messenger;

use Forklift\Tests\Support\MariaDb;

require_once __DIR__ . '/ConsumerTestCase.php';

/**
 * forklift:consume on Symfony's Doctrine transport, on a real MariaDB started on loopback; the
 * handlers share the transport's DBAL connection (as a Symfony app's default connection is).
 */
final class DoctrineConsumerTest extends ConsumerTestCase
{
    private static ?MariaDb $db = null;

    public static function setUpBeforeClass(): void
    {
        self::$db = new MariaDb();
    }

    public static function tearDownAfterClass(): void
    {
        self::$db?->stop();
        self::$db = null;
    }

    protected function setUp(): void
    {
        parent::setUp();
        self::$db->recreate();
        self::$db->pdo('forklift_test')->exec('CREATE TABLE handled (tag VARCHAR(50), pid INT)');
    }

    protected function dsn(string $name): string
    {
        return 'mysql://root@127.0.0.1:' . self::$db->port . "/forklift_test?queue_name=$name";
    }

    public function test_handlers_share_the_consumers_connection_and_it_survives_their_crashes(): void
    {
        $app = $this->app(retries: 0);
        $messages = [];
        for ($i = 0; $i < 6; $i++) {
            $messages[] = new Job('db', "row$i");
            $messages[] = new Job($i % 2 ? 'segfault' : 'fatal', "crash$i");
        }
        $this->send($app, 'async', ...$messages);
        $this->consume($app, ['async'], 12, ['workers' => 2]);

        $rows = self::$db->pdo('forklift_test')->query('SELECT tag, pid FROM handled ORDER BY tag')->fetchAll(\PDO::FETCH_KEY_PAIR);
        $this->assertSame(['row0', 'row1', 'row2', 'row3', 'row4', 'row5'], array_keys($rows), 'every handler wrote through the shared connection');
        $this->assertNotContains(getmypid(), array_map('intval', $rows));
        $this->assertCount(6, $this->drain($app->receivers['failed']));
        $this->assertSame([], $this->drain($app->receivers['async']));
        // The consumer's own connection still answers.
        $this->assertSame(1, (int) $GLOBALS['forklift_test_dbal']->fetchOne('SELECT 1'));
    }
}
