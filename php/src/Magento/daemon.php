<?php

/**
 * The daemon of a Magento 2 shop (APP.php for `bin/forklift run`; `bin/magento forklift:cron`
 * starts it): the dispatcher bootstraps Magento once, reads its cron jobs and groups from
 * Magento's configuration, and runs them from `cron_schedule` (Forklift\Cron\Scheduler).
 *
 * MAGENTO_ROOT (default: the current directory) is the shop; FORKLIFT_PID_FILE overrides the
 * pid file (default var/forklift-cron.pid in the shop).
 */

declare(strict_types=1);

use Forklift\Cron\Group;
use Forklift\Cron\Job;
use Forklift\Cron\Scheduler;
use Forklift\Cron\Store;
use Forklift\Daemon;
use Magento\Framework\App\Bootstrap;

$root = getenv('MAGENTO_ROOT') ?: getcwd();
if (!is_file("$root/app/bootstrap.php")) {
    throw new \InvalidArgumentException("$root is not a Magento 2 root (no app/bootstrap.php): set MAGENTO_ROOT");
}
require "$root/app/bootstrap.php";
require_once dirname(__DIR__, 2) . '/autoload.php';

$bootstrap = Bootstrap::create(BP, $_SERVER);
$om = $bootstrap->getObjectManager();
$om->get(\Magento\Framework\App\State::class)->setAreaCode(\Magento\Framework\App\Area::AREA_CRONTAB);
/** @var \Magento\Framework\App\Config\ScopeConfigInterface $config */
$config = $om->get(\Magento\Framework\App\Config\ScopeConfigInterface::class);
/** @var \Magento\Framework\App\ResourceConnection $resource */
$resource = $om->get(\Magento\Framework\App\ResourceConnection::class);

$daemon = new Daemon(
    'magento-cron',
    pidFile: getenv('FORKLIFT_PID_FILE') ?: BP . '/var/forklift-cron.pid',
    logger: $om->get(\Psr\Log\LoggerInterface::class),
);

// Magento's connections are closed before each fork: each side reconnects when it needs to.
\Forklift\on_fork(prepare: fn () => $resource->closeConnection());

$jobs = [];
$groups = [];
$badJobs = [];
foreach ($om->get(\Magento\Cron\Model\ConfigInterface::class)->getJobs() as $groupId => $groupJobs) {
    $value = fn (string $key, int $default) => (int) ($config->getValue("system/cron/$groupId/$key") ?? $default);
    $groups[] = new Group(
        (string) $groupId,
        $value('schedule_generate_every', 15),
        $value('schedule_ahead_for', 20),
        $value('schedule_lifetime', 15),
        $value('history_cleanup_every', 10),
        $value('history_success_lifetime', 60),
        $value('history_failure_lifetime', 600),
        (bool) $value('use_separate_process', 0),
    );
    foreach ($groupJobs as $code => $job) {
        if (!isset($job['instance'], $job['method'])) {
            continue; // Magento skips these too
        }
        $instance = $job['instance'];
        $method = $job['method'];
        if (!class_exists($instance) || !method_exists($instance, $method)) {
            $badJobs[] = "cron job $code: $instance::$method() does not exist; fix the job's instance/method in its module's etc/crontab.xml";
            continue;
        }
        $jobs[] = new Job(
            (string) $code,
            (string) $groupId,
            (string) ($job['schedule'] ?? ''),
            static function () use ($om, $instance, $method, $code) {
                $schedule = $om->create(\Magento\Cron\Model\Schedule::class)->setJobCode($code);
                return $om->get($instance)->$method($schedule);
            },
            configPath: $job['config_path'] ?? null,
        );
    }
}

$scheduler = new Scheduler(
    $daemon,
    new Store(
        fn () => $resource->getConnection()->getConnection(),
        $resource->getTableName('cron_schedule'),
        $resource->getTableName('forklift_cron_run'),
    ),
    $groups,
    $jobs,
    zone: new \DateTimeZone((string) ($config->getValue('general/locale/timezone') ?: 'UTC')),
    config: fn (string $path) => $config->getValue($path),
    strict: false,
);
// Jobs with a wrong configuration are named at start; the others run.
$logger = $om->get(\Psr\Log\LoggerInterface::class);
foreach ([...$badJobs, ...$scheduler->errors()] as $error) {
    $logger->error("forklift:cron: $error (the job does not run)");
}

return $daemon;
