<?php

declare(strict_types=1);

namespace Forklift\Cron\Config;

use Forklift\Cron\Expression;
use Forklift\Cron\Group;
use Forklift\Cron\InvalidExpressionException;
use Forklift\Cron\Job;

/**
 * Magento 1's (OpenMage's) cron jobs read from modules' config.xml files, without Mage::app(), as
 * Forklift\Cron\Group and Forklift\Cron\Job objects for Forklift\Cron\Scheduler.
 *
 *     $reader = new Magento1Reader(fn (string $model, string $method) => fn () => Mage::getModel($model)->$method());
 *     ['groups' => $groups, 'jobs' => $jobs] = $reader->readFiles($configXmlFiles);
 *
 * The factory makes each job's callable from the model alias and the method of its
 * `<run><model>catalog/observer::reindex</model></run>` ("catalog/observer", "reindex"). It is
 * called once per job while reading; whatever it throws is reported as that job's error.
 *
 * The files, as Magento 1 reads them (Mage_Cron_Model_Observer, Mage_Cron's etc/config.xml,
 * cron.php):
 *
 *  - Jobs are `<config><crontab><jobs><job_code>` with `<schedule><cron_expr>` (a cron
 *    expression) and/or `<schedule><config_path>` (a store configuration path whose value, when
 *    not empty, is the expression), and `<run><model>alias/model::method</model></run>`.
 *    `<config><default><crontab><jobs><job_code>` declares jobs the same way, at the default
 *    configuration scope, where the admin (core_config_data) can change them.
 *  - Files merge in the order given, as Magento's config merge does: a later file's
 *    `cron_expr`, `config_path` or `model` replaces the earlier one, an empty one included.
 *  - Magento 1 has no cron groups: one set of values, `<config><default><system><cron>`
 *    (Mage_Cron: 15/20/15/10/60/600 minutes), for every job, run one at a time. Here they are
 *    the group "default" (Group::magentoDefault() unless the files change the values).
 *
 * "always": a job whose `cron_expr` is exactly `always` is not scheduled; cron.php starts two
 * processes on every run (`-mdefault` and `-malways`, each at most once at a time through
 * cron.sh), and the always one (Mage_Cron_Model_Observer::dispatchAlways()) runs every always
 * job, one after the other, on every cron.php run, i.e. every minute in the usual crontab,
 * beside the scheduled jobs. Forklift's Scheduler has no such pass, so such a job becomes
 * Job schedule `* * * * *` in its own group "always" (a serial lane of its own beside
 * "default"): Group('always', 1, 1, 1, cleanup/success/failure as "default", false). Rows are
 * generated every minute for this and the next minute, a row not started within the minute
 * (e.g. the previous run still runs) is missed, as cron.sh starts no second always process.
 * Unlike Magento 1, which keeps a single `cron_schedule` row per always job, each run has its
 * own row. The always job's `config_path` is not read, as dispatchAlways() does not read it.
 *
 * Where the two job trees or the configuration decide:
 *
 *  - A job code in both trees: its `run` from `crontab/jobs` (else `default/crontab/jobs`), its
 *    schedule from `crontab/jobs` when that has a `cron_expr` or `config_path`, else from
 *    `default/crontab/jobs` (Magento generates rows from both trees; one schedule is kept here).
 *  - A job from `default/crontab/jobs` without its own `config_path`, and a job with no
 *    schedule at all, get Job::$configPath `crontab/jobs/<code>/schedule/cron_expr`: the value
 *    the store configuration (an admin setting) gives there wins, the file's `cron_expr` runs
 *    when it gives nothing, and a job with neither is disabled, as in Magento.
 *
 * Checked while reading, naming the file, the job and what to fix: malformed XML, a root that is
 * not `<config>`, a job without `<run><model>` or with one Magento would refuse (not
 * `alias/model::method`), a `cron_expr` that Forklift\Cron\Expression refuses, a
 * `<system><cron>` value that is not a number of minutes, and what the factory throws. Other
 * elements of config.xml are not looked at.
 *
 * Strict (default): any error throws one ConfigException naming them all. Lenient
 * (`strict: false`): a bad job is left out, a bad value keeps the one before it, a bad file is
 * skipped; the messages come back in `errors` and the rest runs.
 */
final class Magento1Reader
{
    /** The group of the jobs whose cron_expr is "always". */
    public const ALWAYS_GROUP = 'always';

    /** The schedule given to the jobs whose cron_expr is "always": every minute. */
    public const ALWAYS_SCHEDULE = '* * * * *';

    /** `<default><system><cron>` elements => the Forklift\Cron\Group property each sets. */
    private const GROUP_FIELDS = [
        'schedule_generate_every' => 'scheduleGenerateEvery',
        'schedule_ahead_for' => 'scheduleAheadFor',
        'schedule_lifetime' => 'scheduleLifetime',
        'history_cleanup_every' => 'historyCleanupEvery',
        'history_success_lifetime' => 'historySuccessLifetime',
        'history_failure_lifetime' => 'historyFailureLifetime',
    ];

    /** Mage_Cron_Model_Observer's rule for `<run><model>`: alias/model::method. */
    private const RUN_MODEL = '#^([A-Za-z0-9_]+/[A-Za-z0-9_]+)::([A-Za-z0-9_]+)$#';

    /** @var \Closure(string, string): callable */
    private readonly \Closure $factory;

    /**
     * @param callable(string $model, string $method): callable $factory makes a job's callable
     */
    public function __construct(callable $factory)
    {
        $this->factory = \Closure::fromCallable($factory);
    }

    /** The group of the always jobs, with the history values of `$default`. */
    public static function alwaysGroup(?Group $default = null): Group
    {
        $default ??= Group::magentoDefault();
        return new Group(
            self::ALWAYS_GROUP,
            1,
            1,
            1,
            $default->historyCleanupEvery,
            $default->historySuccessLifetime,
            $default->historyFailureLifetime,
            false,
        );
    }

    /**
     * Reads config.xml files, merged in the order given (Magento 1's module order: app/etc/*.xml
     * then the modules as app/etc/modules/*.xml declare and order them, then local.xml).
     *
     * @param list<string> $configXml paths of config.xml files
     * @return array{groups: list<Group>, jobs: list<Job>, errors: list<string>, warnings: list<string>}
     *         groups: "default", and "always" when a job is always; `errors` is empty unless
     *         `$strict` is false
     * @throws ConfigException in strict mode, naming every error
     */
    public function readFiles(array $configXml, bool $strict = true): array
    {
        $findings = new Findings();
        /** @var array<string, array<string, array<string, array{string, string}|list<string>>>> $trees */
        $trees = ['crontab' => [], 'default' => []];
        /** @var array<string, true> $codes in the order first seen */
        $codes = [];
        /** @var array<string, array{int, string}> $values */
        $values = [];

        foreach ($configXml as $file) {
            $root = Xml::root($file, $findings);
            if ($root === null) {
                continue;
            }
            foreach (['crontab' => ['crontab', 'jobs'], 'default' => ['default', 'crontab', 'jobs']] as $tree => $path) {
                foreach (Xml::all($root, ...$path) as $jobsElement) {
                    foreach (Xml::children($jobsElement) as $job) {
                        $code = $job->nodeName;
                        $codes[$code] = true;
                        $entry = $trees[$tree][$code] ?? ['files' => []];
                        if (!in_array($file, $entry['files'], true)) {
                            $entry['files'][] = $file;
                        }
                        foreach (Xml::all($job, 'schedule', 'cron_expr') as $e) {
                            $entry['cron_expr'] = [$e->textContent, $file];
                        }
                        foreach (Xml::all($job, 'schedule', 'config_path') as $e) {
                            $entry['config_path'] = [trim($e->textContent), $file];
                        }
                        foreach (Xml::all($job, 'run', 'model') as $e) {
                            $entry['model'] = [trim($e->textContent), $file];
                        }
                        $trees[$tree][$code] = $entry;
                    }
                }
            }
            foreach (Xml::all($root, 'default', 'system', 'cron') as $cron) {
                foreach (Xml::children($cron) as $field) {
                    $tag = $field->localName;
                    if (!isset(self::GROUP_FIELDS[$tag])) {
                        continue; // other modules' settings may live here too
                    }
                    $minutes = Xml::minutes($field->textContent);
                    if ($minutes === null) {
                        $findings->error(sprintf(
                            '%s: <default><system><cron><%s> is "%s"; give a whole number of minutes from 1 to 525600',
                            $file,
                            $tag,
                            trim($field->textContent)
                        ));
                        continue;
                    }
                    $values[$tag] = [$minutes, $file];
                }
            }
        }

        $d = Group::magentoDefault();
        $default = new Group(
            'default',
            $values['schedule_generate_every'][0] ?? $d->scheduleGenerateEvery,
            $values['schedule_ahead_for'][0] ?? $d->scheduleAheadFor,
            $values['schedule_lifetime'][0] ?? $d->scheduleLifetime,
            $values['history_cleanup_every'][0] ?? $d->historyCleanupEvery,
            $values['history_success_lifetime'][0] ?? $d->historySuccessLifetime,
            $values['history_failure_lifetime'][0] ?? $d->historyFailureLifetime,
            false,
        );
        $jobs = [];
        foreach (array_keys($codes) as $code) {
            $code = (string) $code;
            $primary = $trees['crontab'][$code] ?? null;
            $secondary = $trees['default'][$code] ?? null;
            $where = implode(', ', array_values(array_unique([...$primary['files'] ?? [], ...$secondary['files'] ?? []])));
            $about = "cron job $code";

            $model = $primary['model'] ?? $secondary['model'] ?? null;
            if ($model === null || $model[0] === '') {
                $findings->error("$where: $about: no <run><model>; add <run><model>alias/model::method</model></run>, e.g. catalog/observer::reindexAll");
                continue;
            }
            if (preg_match(self::RUN_MODEL, $model[0], $run) !== 1) {
                $findings->error("{$model[1]}: $about: <run><model> is \"{$model[0]}\"; write it as alias/model::method, e.g. catalog/observer::reindexAll (Magento 1 refuses anything else)");
                continue;
            }

            $scheduled = static fn (?array $t): bool => $t !== null
                && (trim($t['cron_expr'][0] ?? '') !== '' || ($t['config_path'][0] ?? '') !== '');
            $implicit = "crontab/jobs/$code/schedule/cron_expr";
            if ($scheduled($primary)) {
                $source = $primary;
                $implicit = null;
            } else {
                $source = $scheduled($secondary) ? $secondary : null;
            }
            $cron = $source['cron_expr'] ?? null;

            if ($cron !== null && Expression::isAlways($cron[0])) {
                $group = self::ALWAYS_GROUP;
                $schedule = self::ALWAYS_SCHEDULE;
                $configPath = null;
            } else {
                $group = 'default';
                $schedule = '';
                if ($cron !== null && trim($cron[0]) !== '') {
                    try {
                        $schedule = (string) new Expression($cron[0]);
                    } catch (InvalidExpressionException $e) {
                        $findings->error("{$cron[1]}: $about: {$e->getMessage()}; fix its <schedule><cron_expr>");
                        continue;
                    }
                }
                $own = $source['config_path'][0] ?? '';
                $configPath = $own !== '' ? $own : $implicit;
            }

            [, $alias, $method] = $run;
            $callable = $findings->make(
                $this->factory,
                $alias,
                $method,
                $model[1],
                $about,
                'fix its <run><model> (does the model exist, has it that method?)',
                'fix the factory or the job\'s <run><model>',
            );
            if ($callable === null) {
                continue;
            }
            try {
                $jobs[] = new Job($code, $group, $schedule, $callable, configPath: $configPath);
            } catch (\InvalidArgumentException $e) {
                $findings->error("$where: {$e->getMessage()}");
            }
        }

        $groups = [$default];
        if (array_filter($jobs, fn (Job $j) => $j->group === self::ALWAYS_GROUP) !== []) {
            $groups[] = self::alwaysGroup($default);
        }
        return $findings->result($groups, $jobs, $strict);
    }
}
