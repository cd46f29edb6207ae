<?php

/**
 * The daemon of a Magento 1 / OpenMage shop (APP.php for `bin/forklift run`): the dispatcher
 * bootstraps the shop once (Mage::app()), reads the cron jobs of every module's config.xml
 * (Forklift\Cron\Config\Magento1Reader: `crontab/jobs`, `schedule/cron_expr` or `config_path`,
 * `run/model`, and `always` jobs in a serial group "always"), and runs them from the same
 * `cron_schedule` table. Replace the shop's cron.sh/cron.php crontab line with:
 *
 *     MAGENTO_ROOT=/var/www/shop vendor/bin/forklift run vendor/forklift/forklift/src/Magento/openmage-daemon.php
 *
 * Not tested here (no OpenMage installation in the test suite): the reader it uses is.
 */

declare(strict_types=1);

use Forklift\Cron\Config\Magento1Reader;
use Forklift\Cron\Group;
use Forklift\Cron\Scheduler;
use Forklift\Cron\Store;
use Forklift\Daemon;

$root = getenv('MAGENTO_ROOT') ?: getcwd();
if (!is_file("$root/app/Mage.php")) {
    throw new \InvalidArgumentException("$root is not a Magento 1 / OpenMage root (no app/Mage.php): set MAGENTO_ROOT");
}
require_once "$root/app/Mage.php";
require_once dirname(__DIR__, 2) . '/autoload.php';
\Mage::app('admin')->setUseSessionInUrl(false);

$daemon = new Daemon('openmage-cron', pidFile: getenv('FORKLIFT_PID_FILE') ?: "$root/var/forklift-cron.pid");

/** @var \Mage_Core_Model_Resource $resource */
$resource = \Mage::getSingleton('core/resource');
// Closed before each fork: the dispatcher and each job connect on their own.
\Forklift\on_fork(prepare: function () use ($resource): void {
    $resource->getConnection('core_write')->closeConnection();
});

$reader = new Magento1Reader(static fn (string $model, string $method): callable => static function () use ($model, $method) {
    $schedule = \Mage::getModel('cron/schedule');
    return \Mage::getModel($model)->$method($schedule);
});
$files = glob("$root/app/code/*/*/*/etc/config.xml") ?: [];
['groups' => $groups, 'jobs' => $jobs, 'errors' => $errors] = $reader->readFiles($files, strict: false);
foreach ($errors as $error) {
    \Mage::log("forklift: $error (the job does not run)", \Zend_Log::ERR);
    fwrite(STDERR, "forklift: $error (the job does not run)\n");
}

new Scheduler(
    $daemon,
    new Store(
        fn () => $resource->getConnection('core_write')->getConnection(),
        $resource->getTableName('cron/schedule'),
        // Forklift's facts beside it, with the shop's table prefix.
        str_replace('cron_schedule', 'forklift_cron_run', $resource->getTableName('cron/schedule')),
    ),
    $groups ?: [Group::magentoDefault(), Magento1Reader::alwaysGroup()],
    $jobs,
    zone: new \DateTimeZone((string) (\Mage::getStoreConfig('general/locale/timezone') ?: 'UTC')),
    config: fn (string $path) => \Mage::getStoreConfig($path),
    strict: false,
);

return $daemon;
