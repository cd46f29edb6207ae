<?php

declare(strict_types=1);

namespace Forklift\Cron\Config;

use Forklift\Cron\Expression;
use Forklift\Cron\Group;
use Forklift\Cron\InvalidExpressionException;
use Forklift\Cron\Job;

/**
 * Magento 2's cron configuration read from its XML files, without Magento's object manager, as
 * Forklift\Cron\Group and Forklift\Cron\Job objects for Forklift\Cron\Scheduler.
 *
 *     $reader = new Magento2Reader(fn (string $instance, string $method) => $make($instance, $method));
 *     ['groups' => $groups, 'jobs' => $jobs] = $reader->readModules(['app/code', 'vendor']);
 *
 * The factory makes each job's callable from its `instance` (class) and `method`; with Magento it
 * would use the object manager, e.g. `fn () => $om->get($instance)->$method($schedule)`. It is
 * called once per job while reading; whatever it throws is reported as that job's error.
 *
 * The files, as Magento reads them (Magento_Cron's crontab.xsd, cron_groups.xsd,
 * Model/Config/Converter/Xml.php, Model/Groups/Config/Converter/Xml.php,
 * Observer/ProcessCronQueueObserver.php):
 *
 *  - `etc/crontab.xml`: `<config><group id="…"><job name="…" instance="Class" method="m">` with an
 *    optional `<schedule>` (a cron expression) and an optional `<config_path>` (a configuration
 *    path whose value, when not empty, is the expression). The job name is the `job_code`.
 *  - `etc/cron_groups.xml`: `<config><group id="…">` with `schedule_generate_every`,
 *    `schedule_ahead_for`, `schedule_lifetime`, `history_cleanup_every`,
 *    `history_success_lifetime`, `history_failure_lifetime` (minutes) and `use_separate_process`.
 *  - Files merge in the order given, as Magento's DOM merge does with `group` keyed by `id` and
 *    `job` by `name`: a later declaration of a job changes the attributes and elements it gives
 *    and keeps the others; a later group changes the values it gives. An empty `<schedule>` or
 *    group value does not override (Magento's merge keeps a node that has no content).
 *  - Stock groups: `default` 15/20/15/10/60/4320 one at a time (Magento_Cron), `index`
 *    1/4/2/10/60/4320 separate (Magento_Indexer), `consumers` 15/20/15/10/60/600 separate
 *    (Magento_MessageQueue); 2.2 and older had 600 for the first two. Pass those modules'
 *    cron_groups.xml (readModules() does) to get the shop's values.
 *
 * What Forklift does where Magento differs or is silent:
 *
 *  - A job without `<schedule>` and `<config_path>`: Magento keeps it, disabled, unless its
 *    default-scope configuration `crontab/<group>/jobs/<name>/schedule/cron_expr` gives an
 *    expression (Magento\Cron\Model\Config\Reader\Db merges that over the XML: how an admin
 *    setting schedules e.g. sitemap generation). Such a value also replaces a `<schedule>`. So a
 *    job without `<config_path>` gets that path as its Job::$configPath: the Scheduler's config
 *    reader decides, and the `<schedule>` runs when it gives nothing. A job with its own
 *    `<config_path>` keeps it (that override of its `<schedule>` is then not read).
 *  - A group in crontab.xml that no cron_groups.xml declares: Magento reads its values as null,
 *    so `schedule_ahead_for` is 0 and no row is ever generated: its jobs silently never run.
 *    Forklift runs them with Group::magentoDefault()'s values (15/20/15/10/60/600, one at a
 *    time) and says so in `warnings`, naming the file and the job (not for `default`, which
 *    Magento_Cron always declares).
 *  - The same job name in two groups: Magento runs it in both; Forklift runs it once, in the
 *    group of the later declaration, and says so in `warnings`.
 *  - Group values must be whole minutes from 1 to 525600 and `use_separate_process` 0 or 1
 *    (Magento compares it with 1 and subtracts the values when it sorts the groups: "true" and
 *    "false" are not separate there, and break cron:run on PHP 8).
 *  - Checked while reading, with the file, the job or group, and what to fix: malformed XML, a
 *    root that is not `<config>`, elements the schemas do not have, a group without `id`, a job
 *    without `name`, `instance` (a class name) or `method`, a `<schedule>` that
 *    Forklift\Cron\Expression refuses, a group value that is not a number of minutes, and what
 *    the factory throws (e.g. a class or method that does not exist). Magento finds most of
 *    these only when the job is due, or never.
 *
 * Strict (default): any error throws one ConfigException naming them all. Lenient
 * (`strict: false`): a bad job is left out, a bad group value keeps the value before it (or the
 * default), a bad file is skipped; the messages come back in `errors` and the rest runs.
 */
final class Magento2Reader
{
    /** cron_groups.xml elements => the Forklift\Cron\Group property each sets. */
    private const GROUP_FIELDS = [
        'schedule_generate_every' => 'scheduleGenerateEvery',
        'schedule_ahead_for' => 'scheduleAheadFor',
        'schedule_lifetime' => 'scheduleLifetime',
        'history_cleanup_every' => 'historyCleanupEvery',
        'history_success_lifetime' => 'historySuccessLifetime',
        'history_failure_lifetime' => 'historyFailureLifetime',
        'use_separate_process' => 'useSeparateProcess',
    ];

    private const CLASS_NAME = '/^\\\\?[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*(?:\\\\[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)*$/';
    private const METHOD_NAME = '/^[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*$/';

    /** @var \Closure(string, string): callable */
    private readonly \Closure $factory;

    /**
     * @param callable(string $instance, string $method): callable $factory makes a job's callable
     */
    public function __construct(callable $factory)
    {
        $this->factory = \Closure::fromCallable($factory);
    }

    /**
     * Reads crontab.xml and cron_groups.xml files, merged in the order given (give Magento's
     * module order: that of app/etc/config.php's `modules`).
     *
     * @param list<string> $crontabXml    paths of etc/crontab.xml files
     * @param list<string> $cronGroupsXml paths of etc/cron_groups.xml files
     * @return array{groups: list<Group>, jobs: list<Job>, errors: list<string>, warnings: list<string>}
     *         `errors` is empty unless `$strict` is false
     * @throws ConfigException in strict mode, naming every error
     */
    public function readFiles(array $crontabXml, array $cronGroupsXml, bool $strict = true): array
    {
        $findings = new Findings();
        return $this->read($crontabXml, $cronGroupsXml, $findings, $strict);
    }

    /**
     * Reads `<dir>/<Vendor>/<Module>/etc/crontab.xml` and `etc/cron_groups.xml` of every module
     * under the directories given (app/code, vendor), in Magento's module order: from each
     * module's etc/module.xml, by name with the Magento_ modules first, each after the modules of
     * its `<sequence>` (Magento\Framework\Module\ModuleList\Loader). A module without module.xml
     * is named Vendor_Module after its directories. For the exact order of a shop (modules
     * disabled, app/etc/config.php edited), list the files and call readFiles().
     *
     * @param string|list<string> $dirs
     * @return array{groups: list<Group>, jobs: list<Job>, errors: list<string>, warnings: list<string>}
     * @throws ConfigException in strict mode, naming every error
     */
    public function readModules(string|array $dirs, bool $strict = true): array
    {
        $findings = new Findings();
        /** @var array<string, array{dir: string, sequence: list<string>}> $modules */
        $modules = [];
        foreach ((array) $dirs as $dir) {
            if (!is_dir($dir)) {
                $findings->error("$dir: not a directory; give Magento's app/code or vendor directory");
                continue;
            }
            $paths = glob(rtrim($dir, '/') . '/*/*', GLOB_ONLYDIR) ?: [];
            sort($paths, SORT_STRING);
            foreach ($paths as $path) {
                $declaration = self::moduleDeclaration($path, $findings);
                if ($declaration === null) {
                    continue;
                }
                [$name, $sequence] = $declaration;
                if (isset($modules[$name])) {
                    $findings->error(sprintf(
                        '%s/etc/module.xml: module %s is also in %s; remove one copy',
                        $path,
                        $name,
                        $modules[$name]['dir']
                    ));
                    continue;
                }
                $modules[$name] = ['dir' => $path, 'sequence' => $sequence];
            }
        }

        $crontabs = [];
        $groups = [];
        foreach (self::moduleOrder($modules, $findings) as $name) {
            $etc = $modules[$name]['dir'] . '/etc';
            if (is_file("$etc/crontab.xml")) {
                $crontabs[] = "$etc/crontab.xml";
            }
            if (is_file("$etc/cron_groups.xml")) {
                $groups[] = "$etc/cron_groups.xml";
            }
        }
        return $this->read($crontabs, $groups, $findings, $strict);
    }

    /**
     * @param list<string> $crontabXml
     * @param list<string> $cronGroupsXml
     * @return array{groups: list<Group>, jobs: list<Job>, errors: list<string>, warnings: list<string>}
     */
    private function read(array $crontabXml, array $cronGroupsXml, Findings $findings, bool $strict): array
    {
        $declaredGroups = self::readGroups($cronGroupsXml, $findings);
        $declaredJobs = self::readJobs($crontabXml, $findings);

        /** @var array<string, Group> $groups */
        $groups = [];
        /** @var array<string, true> $unusable */
        $unusable = [];
        $d = Group::magentoDefault();
        foreach ($declaredGroups as $id => $g) {
            $v = $g['values'];
            try {
                $groups[$id] = new Group(
                    $id,
                    $v['schedule_generate_every'] ?? $d->scheduleGenerateEvery,
                    $v['schedule_ahead_for'] ?? $d->scheduleAheadFor,
                    $v['schedule_lifetime'] ?? $d->scheduleLifetime,
                    $v['history_cleanup_every'] ?? $d->historyCleanupEvery,
                    $v['history_success_lifetime'] ?? $d->historySuccessLifetime,
                    $v['history_failure_lifetime'] ?? $d->historyFailureLifetime,
                    $v['use_separate_process'] ?? $d->useSeparateProcess,
                );
            } catch (\InvalidArgumentException $e) {
                $findings->error(sprintf(
                    '%s: group %s: %s; cron_groups.xsd allows ids of a-z, 0-9 and _',
                    implode(', ', $g['files']),
                    $id,
                    $e->getMessage()
                ));
                $unusable[$id] = true;
            }
        }

        $jobs = [];
        foreach ($declaredJobs as $name => $j) {
            $where = implode(', ', $j['files']);
            $group = $j['group'];
            $about = "cron job $name (group $group)";
            if (!isset($groups[$group])) {
                if (isset($unusable[$group])) {
                    $findings->error("$where: $about: its group cannot be used (see its error); fix the group");
                    continue;
                }
                try {
                    $groups[$group] = Group::magentoDefault($group);
                } catch (\InvalidArgumentException $e) {
                    $findings->error(sprintf(
                        '%s: %s: %s; use an id of a-z, 0-9 and _',
                        $j['groupFile'],
                        $about,
                        $e->getMessage()
                    ));
                    $unusable[$group] = true;
                    continue;
                }
                if ($group !== 'default') {
                    $findings->warn(sprintf(
                        '%s: %s: no cron_groups.xml declares group "%s", so Magento would never schedule'
                            . ' its jobs (its schedule_ahead_for is unset); Forklift runs them with the'
                            . ' default values (15/20/15/10/60/600 minutes, one job at a time): declare'
                            . ' <group id="%s"> in the module\'s etc/cron_groups.xml',
                        $j['groupFile'],
                        $about,
                        $group,
                        $group
                    ));
                }
            }

            [$instance, $instanceFile] = $j['instance'] ?? ['', $where];
            if ($instance === '') {
                $findings->error("$where: $about: no instance; add instance=\"Vendor\\Module\\Cron\\ClassName\" to its <job>");
                continue;
            }
            if (preg_match(self::CLASS_NAME, $instance) !== 1) {
                $findings->error("$instanceFile: $about: instance \"$instance\" is not a PHP class name; write it as Vendor\\Module\\Cron\\ClassName");
                continue;
            }
            $instance = ltrim($instance, '\\');
            [$method, $methodFile] = $j['method'] ?? ['', $where];
            if ($method === '') {
                $findings->error("$where: $about: no method; add method=\"execute\" (the public method of $instance to call) to its <job>");
                continue;
            }
            if (preg_match(self::METHOD_NAME, $method) !== 1) {
                $findings->error("$methodFile: $about: method \"$method\" is not a PHP method name; give the name of a public method of $instance");
                continue;
            }

            $schedule = '';
            if (isset($j['schedule'])) {
                try {
                    $schedule = (string) new Expression($j['schedule'][0]);
                } catch (InvalidExpressionException $e) {
                    $findings->error("{$j['schedule'][1]}: $about: {$e->getMessage()}; fix its <schedule>");
                    continue;
                }
            }
            $configPath = $j['configPath'][0] ?? "crontab/$group/jobs/$name/schedule/cron_expr";

            $run = $findings->make(
                $this->factory,
                $instance,
                $method,
                $where,
                $about,
                'fix the job\'s instance and method (does the class exist, is the method public?)',
                'fix the factory or the job\'s instance and method',
            );
            if ($run === null) {
                continue;
            }
            try {
                $jobs[] = new Job($name, $group, $schedule, $run, configPath: $configPath);
            } catch (\InvalidArgumentException $e) {
                $findings->error("$where: {$e->getMessage()}");
            }
        }

        return $findings->result(array_values($groups), $jobs, $strict);
    }

    /**
     * cron_groups.xml files merged: group id => the values given (later files win), the files.
     *
     * @param list<string> $files
     * @return array<string, array{values: array<string, int|bool>, files: list<string>}>
     */
    private static function readGroups(array $files, Findings $findings): array
    {
        $groups = [];
        foreach ($files as $file) {
            $root = Xml::root($file, $findings);
            if ($root === null) {
                continue;
            }
            foreach (Xml::children($root) as $el) {
                if ($el->localName !== 'group') {
                    $findings->error("$file: unknown element <{$el->nodeName}> in <config>; cron_groups.xml holds <group id=\"…\"> elements");
                    continue;
                }
                $id = trim($el->getAttribute('id'));
                if ($id === '') {
                    $findings->error("$file: a <group> has no id; add id=\"…\" (a-z, 0-9 and _)");
                    continue;
                }
                $groups[$id] ??= ['values' => [], 'files' => []];
                if (!in_array($file, $groups[$id]['files'], true)) {
                    $groups[$id]['files'][] = $file;
                }
                foreach (Xml::children($el) as $field) {
                    $tag = $field->localName;
                    if (!isset(self::GROUP_FIELDS[$tag])) {
                        $findings->error(sprintf(
                            '%s: group %s: unknown element <%s>; the elements of a group are %s',
                            $file,
                            $id,
                            $field->nodeName,
                            implode(', ', array_map(fn ($t) => "<$t>", array_keys(self::GROUP_FIELDS)))
                        ));
                        continue;
                    }
                    $text = trim($field->textContent);
                    if ($text === '') {
                        continue; // as Magento's merge: a node without content changes nothing
                    }
                    if ($tag === 'use_separate_process') {
                        if ($text !== '0' && $text !== '1') {
                            $findings->error(sprintf(
                                '%s: group %s: <use_separate_process> is "%s"; write 1 or 0 (Magento compares it'
                                    . ' with 1 and subtracts the values of groups: "true" and "false" run in the same'
                                    . ' process there, and break cron:run on PHP 8)',
                                $file,
                                $id,
                                $text
                            ));
                            continue;
                        }
                        $groups[$id]['values'][$tag] = $text === '1';
                        continue;
                    }
                    $minutes = Xml::minutes($text);
                    if ($minutes === null) {
                        $findings->error(sprintf(
                            '%s: group %s: <%s> is "%s"; give a whole number of minutes from 1 to 525600',
                            $file,
                            $id,
                            $tag,
                            $text
                        ));
                        continue;
                    }
                    $groups[$id]['values'][$tag] = $minutes;
                }
            }
        }
        return $groups;
    }

    /**
     * crontab.xml files merged: job name => what its declarations give, each value with the file
     * that gave it.
     *
     * @param list<string> $files
     * @return array<string, array{group: string, groupFile: string, files: list<string>,
     *     instance?: array{string, string}, method?: array{string, string},
     *     schedule?: array{string, string}, configPath?: array{string, string}}>
     */
    private static function readJobs(array $files, Findings $findings): array
    {
        $jobs = [];
        foreach ($files as $file) {
            $root = Xml::root($file, $findings);
            if ($root === null) {
                continue;
            }
            $inFile = [];
            foreach (Xml::children($root) as $g) {
                if ($g->localName !== 'group') {
                    $findings->error("$file: unknown element <{$g->nodeName}> in <config>; crontab.xml holds <group id=\"…\"> elements");
                    continue;
                }
                $id = trim($g->getAttribute('id'));
                if ($id === '') {
                    $findings->error("$file: a <group> has no id; add id=\"default\" or the id of a group from cron_groups.xml");
                    continue;
                }
                foreach (Xml::children($g) as $el) {
                    if ($el->localName !== 'job') {
                        $findings->error("$file: group $id: unknown element <{$el->nodeName}>; a group holds <job name=\"…\" instance=\"…\" method=\"…\"> elements");
                        continue;
                    }
                    $name = trim($el->getAttribute('name'));
                    if ($name === '') {
                        $findings->error("$file: group $id: a <job> has no name; add name=\"…\" (it is the job_code)");
                        continue;
                    }
                    if (isset($inFile[$name])) {
                        $findings->error("$file: cron job $name is declared twice in this file; keep one declaration");
                    }
                    $inFile[$name] = true;

                    $declared = [];
                    foreach (['instance', 'method'] as $attribute) {
                        if ($el->hasAttribute($attribute)) {
                            $declared[$attribute] = [trim($el->getAttribute($attribute)), $file];
                        }
                    }
                    $seen = [];
                    foreach (Xml::children($el) as $child) {
                        $tag = $child->localName;
                        if ($tag !== 'schedule' && $tag !== 'config_path') {
                            $findings->error("$file: cron job $name (group $id): unknown element <{$child->nodeName}>; a job holds <schedule> and <config_path>");
                            continue;
                        }
                        if (isset($seen[$tag])) {
                            $findings->error("$file: cron job $name (group $id): more than one <$tag>; keep one");
                            continue;
                        }
                        $seen[$tag] = true;
                        $text = trim($child->textContent);
                        if ($text !== '') {
                            $declared[$tag === 'schedule' ? 'schedule' : 'configPath'] = [$text, $file];
                        }
                    }

                    if (!isset($jobs[$name])) {
                        $jobs[$name] = ['group' => $id, 'groupFile' => $file, 'files' => [$file]] + $declared;
                        continue;
                    }
                    if ($jobs[$name]['group'] !== $id) {
                        $findings->warn(sprintf(
                            '%s: cron job %s is in group %s here and in group %s in %s; Magento would run it in'
                                . ' both groups, Forklift runs it once, in group %s (the later declaration):'
                                . ' declare it in one group only',
                            $file,
                            $name,
                            $id,
                            $jobs[$name]['group'],
                            $jobs[$name]['groupFile'],
                            $id
                        ));
                        $jobs[$name]['group'] = $id;
                        $jobs[$name]['groupFile'] = $file;
                    }
                    $jobs[$name] = $declared + $jobs[$name];
                    if (!in_array($file, $jobs[$name]['files'], true)) {
                        $jobs[$name]['files'][] = $file;
                    }
                }
            }
        }
        return $jobs;
    }

    /**
     * A module's name and `<sequence>` from its etc/module.xml, or null when the directory is not
     * a module with cron files.
     *
     * @return array{string, list<string>}|null
     */
    private static function moduleDeclaration(string $path, Findings $findings): ?array
    {
        $etc = "$path/etc";
        $fallback = basename(dirname($path)) . '_' . basename($path);
        if (!is_file("$etc/module.xml")) {
            return is_file("$etc/crontab.xml") || is_file("$etc/cron_groups.xml") ? [$fallback, []] : null;
        }
        $root = Xml::root("$etc/module.xml", $findings);
        $module = $root === null ? null : Xml::child($root, 'module');
        $name = $module === null ? '' : trim($module->getAttribute('name'));
        if ($name === '') {
            if ($root !== null) {
                $findings->error("$etc/module.xml: no <module name=\"Vendor_Module\">; add it");
            }
            return [$fallback, []];
        }
        $sequence = [];
        foreach (Xml::all($module, 'sequence', 'module') as $dependency) {
            $dependencyName = trim($dependency->getAttribute('name'));
            if ($dependencyName !== '') {
                $sequence[] = $dependencyName;
            }
        }
        return [$name, $sequence];
    }

    /**
     * Magento's module order: by name, Magento_ modules first, each module after the modules of
     * its `<sequence>` (transitively, through modules without cron files too).
     *
     * @param array<string, array{dir: string, sequence: list<string>}> $modules
     * @return list<string>
     */
    private static function moduleOrder(array $modules, Findings $findings): array
    {
        $names = array_keys($modules);
        sort($names, SORT_STRING);
        $prearranged = [
            ...array_values(array_filter($names, fn ($n) => str_starts_with($n, 'Magento_'))),
            ...array_values(array_filter($names, fn ($n) => !str_starts_with($n, 'Magento_'))),
        ];
        $rank = array_flip($prearranged);
        $order = [];
        $state = [];
        $visit = function (string $name, array $path) use (&$visit, &$order, &$state, $modules, $rank, $findings): void {
            if (($state[$name] ?? 0) === 2) {
                return;
            }
            if (($state[$name] ?? 0) === 1) {
                $findings->error(sprintf(
                    '%s/etc/module.xml: circular <sequence>: %s; remove one of these dependencies',
                    $modules[$name]['dir'],
                    implode(' -> ', [...$path, $name])
                ));
                return;
            }
            $state[$name] = 1;
            $dependencies = array_values(array_filter(
                array_unique($modules[$name]['sequence']),
                fn ($d) => isset($rank[$d])
            ));
            usort($dependencies, fn ($a, $b) => $rank[$a] <=> $rank[$b]);
            foreach ($dependencies as $dependency) {
                $visit($dependency, [...$path, $name]);
            }
            $state[$name] = 2;
            $order[] = $name;
        };
        foreach ($prearranged as $name) {
            $visit($name, []);
        }
        return $order;
    }
}
