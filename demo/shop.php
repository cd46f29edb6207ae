<?php

/**
 * The demo shop's daemon (`make demo`): Magento-style cron jobs in two groups, run from Magento's
 * `cron_schedule` table on SQLite, and a mail pool. `bin/forklift run demo/shop.php` runs it.
 */

declare(strict_types=1);

use Forklift\Cron\Group;
use Forklift\Cron\Job;
use Forklift\Cron\Scheduler;
use Forklift\Cron\Store;
use Forklift\Daemon;
use Forklift\Pool;

require dirname(__DIR__) . '/php/autoload.php';

// The jobs' errors go to their rows, not to the terminal.
ini_set('display_errors', '0');
ini_set('log_errors', '0');

$db = getenv('FORKLIFT_DEMO_DB') ?: dirname(__DIR__) . '/var/demo.sqlite';
$run = getenv('FORKLIFT_DEMO_RUN') ?: sys_get_temp_dir() . '/forklift-demo-' . posix_geteuid();
@mkdir(dirname($db), 0755, true);
@mkdir($run, 0700, true);

$d = new Daemon('demo-shop', pidFile: "$run/demo-shop.pid", stopTimeout: 5);

// Magento's two stock groups: "default" one job at a time, "index" each job in its own child.
new Scheduler($d, Store::sqlite($db), [Group::magentoDefault(), Group::magentoIndex()], [
    new Job('sales_clean_quotes', 'default', '* * * * *', function (): string {
        usleep(300_000);
        return 'cleaned 42 quotes';
    }),
    new Job('newsletter_send_all', 'default', '* * * * *', function (): void {
        trigger_error('3 subscribers have no e-mail address', E_USER_WARNING);
        usleep(200_000);
    }),
    new Job('catalog_product_alert', 'default', '* * * * *', function (): void {
        // A fatal error: the row says which, where, and what was raised before it.
        trigger_error('alert template is deprecated', E_USER_DEPRECATED);
        trigger_error('product 1337 has no price', E_USER_ERROR);
    }),
    new Job('indexer_reindex_all_invalid', 'index', '* * * * *', function (): void {
        ini_set('memory_limit', '64M');
        $rows = [];
        while (true) {
            $rows[] = str_repeat('x', 1 << 20); // runs out of memory
        }
    }),
    new Job('stuck_import', 'index', '* * * * *', function (): void {
        sleep(3600); // hangs: ended at its timeout
    }, timeout: 4.0),
    new Job('sitemap_generate', 'default', '* * * * *', function (): string {
        sleep(8); // a long job in a child of its own, beside the default group's
        return 'sitemap.xml written';
    }, parallel: true),
], tick: 1.0);

$mail = new Pool(function (array $message): string {
    usleep(random_int(20_000, 80_000));
    return "sent to {$message['to']}";
}, workers: 2, name: 'mail');
$d->pool($mail);
$d->every(1.0, function () use ($mail): void {
    foreach (range(1, 5) as $i) {
        $mail->submit(['to' => "customer$i@example.com"]);
    }
}, name: 'mail queue');

return $d;
