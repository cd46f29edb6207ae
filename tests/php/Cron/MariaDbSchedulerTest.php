<?php

declare(strict_types=1);

namespace Forklift\Tests\Cron;

use Forklift\Cron\Store;
use Forklift\Tests\Support\MariaDb;

require_once __DIR__ . "/SchedulerTest.php";

/**
 * Every scheduler test again on a real MariaDB server, started on loopback for this class with a
 * throw-away data directory (Magento's cron_schedule lives in MySQL/MariaDB).
 */
final class MariaDbSchedulerTest extends SchedulerTest
{
    private static ?MariaDb $server = null;

    public static function setUpBeforeClass(): void
    {
        self::$server = new MariaDb();
    }

    public static function tearDownAfterClass(): void
    {
        self::$server?->stop();
        self::$server = null;
    }

    protected function makeStore(): array
    {
        self::$server->recreate();
        $db = self::$server->pdo('forklift_test');
        $db->exec("SET time_zone = '+00:00'");
        return [Store::mysql(self::$server->dsn(), 'root', ''), $db];
    }

    protected function storeCode(): string
    {
        $dsn = self::$server->dsn();
        return "Forklift\\Cron\\Store::mysql('$dsn', 'root', '')";
    }

    public function test_the_table_has_magento_s_columns(): void
    {
        $this->store->install();
        $cols = array_column($this->db->query('SHOW COLUMNS FROM cron_schedule')->fetchAll(\PDO::FETCH_ASSOC), 'Type', 'Field');
        $this->assertSame([
            'schedule_id' => 'int(10) unsigned',
            'job_code' => 'varchar(255)',
            'status' => 'varchar(7)',
            'messages' => 'text',
            'created_at' => 'timestamp',
            'scheduled_at' => 'timestamp',
            'executed_at' => 'timestamp',
            'finished_at' => 'timestamp',
        ], $cols);
    }
}
