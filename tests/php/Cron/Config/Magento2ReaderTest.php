<?php

declare(strict_types=1);

namespace Forklift\Tests\Cron\Config;

use Forklift\Cron\Config\ConfigException;
use Forklift\Cron\Config\Magento2Reader;
use Forklift\Cron\Group;
use Forklift\Cron\Job;
use PHPUnit\Framework\TestCase;

/**
 * Forklift\Cron\Config\Magento2Reader on Magento 2 modules' etc/crontab.xml and
 * etc/cron_groups.xml (fixtures/m2: Magento_Cron, _Indexer, _MessageQueue, _Sitemap in vendor/,
 * Acme_Feeds and Aardvark_Tweaks in app/code/), and on bad files written by each test.
 *
 * Needs only php/autoload.php, not the extension.
 */
final class Magento2ReaderTest extends TestCase
{
    private const M2 = __DIR__ . '/fixtures/m2';
    private const VENDOR = self::M2 . '/vendor/magento';
    private const ACME = self::M2 . '/app/code/Acme/Feeds/etc';
    private const AARDVARK = self::M2 . '/app/code/Aardvark/Tweaks/etc';

    /** @var list<array{string, string}> the factory's calls: instance, method */
    private array $calls = [];
    private ?string $dir = null;

    protected function tearDown(): void
    {
        if ($this->dir !== null) {
            $files = new \RecursiveIteratorIterator(
                new \RecursiveDirectoryIterator($this->dir, \FilesystemIterator::SKIP_DOTS),
                \RecursiveIteratorIterator::CHILD_FIRST
            );
            foreach ($files as $f) {
                $f->isDir() ? rmdir($f->getPathname()) : unlink($f->getPathname());
            }
            rmdir($this->dir);
        }
    }

    private function reader(): Magento2Reader
    {
        return new Magento2Reader(function (string $instance, string $method): \Closure {
            $this->calls[] = [$instance, $method];
            return static fn () => "$instance::$method";
        });
    }

    /** Writes `$content` to `<a temporary directory>/$name` and gives the path. */
    private function file(string $name, string $content): string
    {
        if ($this->dir === null) {
            $this->dir = sys_get_temp_dir() . '/forklift-m2reader-' . bin2hex(random_bytes(6));
            mkdir($this->dir);
        }
        $path = "$this->dir/$name";
        if (!is_dir(dirname($path))) {
            mkdir(dirname($path), 0777, true);
        }
        file_put_contents($path, $content);
        return $path;
    }

    /** @return list<array{string, int, int, int, int, int, int, bool}> */
    private static function groupRows(array $groups): array
    {
        return array_map(fn (Group $g) => [
            $g->name,
            $g->scheduleGenerateEvery,
            $g->scheduleAheadFor,
            $g->scheduleLifetime,
            $g->historyCleanupEvery,
            $g->historySuccessLifetime,
            $g->historyFailureLifetime,
            $g->useSeparateProcess,
        ], $groups);
    }

    /** @return list<array{string, string, string, ?string}> */
    private static function jobRows(array $jobs): array
    {
        return array_map(fn (Job $j) => [$j->code, $j->group, $j->schedule, $j->configPath], $jobs);
    }

    private static function modules(): array
    {
        return [self::M2 . '/vendor', self::M2 . '/app/code'];
    }

    public function test_modules_groups_are_the_stock_ones_merged_with_the_modules_changes(): void
    {
        $r = $this->reader()->readModules(self::modules());

        self::assertSame([
            // Magento_Cron
            ['default', 15, 20, 15, 10, 60, 4320, false],
            // Magento_Indexer's 1/4/2/10/60/4320, then Acme_Feeds changes two values, keeps the others
            ['index', 1, 10, 2, 10, 60, 1440, true],
            // Magento_MessageQueue
            ['consumers', 15, 20, 15, 10, 60, 600, true],
            // Acme_Feeds' own (the tooltip attribute is ignored)
            ['acme_feeds', 5, 10, 5, 10, 120, 1440, true],
        ], self::groupRows($r['groups']));
        self::assertSame([], $r['errors']);
        self::assertSame([], $r['warnings']);
    }

    public function test_modules_jobs_have_their_codes_groups_schedules_and_config_paths(): void
    {
        $r = $this->reader()->readModules(self::modules());

        self::assertSame([
            ['indexer_reindex_all_invalid', 'index', '* * * * *', 'crontab/index/jobs/indexer_reindex_all_invalid/schedule/cron_expr'],
            ['indexer_update_all_views', 'index', '* * * * *', 'crontab/index/jobs/indexer_update_all_views/schedule/cron_expr'],
            // Acme_Feeds' later declaration changes the schedule
            ['indexer_clean_all_changelogs', 'index', '30 */2 * * *', 'crontab/index/jobs/indexer_clean_all_changelogs/schedule/cron_expr'],
            ['messagequeue_clean_outdated_locks', 'default', '0 * * * *', 'crontab/default/jobs/messagequeue_clean_outdated_locks/schedule/cron_expr'],
            ['consumers_runner', 'consumers', '* * * * *', 'crontab/consumers/jobs/consumers_runner/schedule/cron_expr'],
            // no <schedule>, no <config_path>: disabled unless the configuration gives it
            ['sitemap_generate', 'default', '', 'crontab/default/jobs/sitemap_generate/schedule/cron_expr'],
            // Aardvark_Tweaks (after Acme_Feeds by its <sequence>) changes the schedule; the
            // config_path of Acme_Feeds stays
            ['acme_feeds_export', 'acme_feeds', '0 * * * *', 'acme_feeds/export/cron_expr'],
            ['acme_feeds_cleanup', 'default', '15 3 * * *', 'crontab/default/jobs/acme_feeds_cleanup/schedule/cron_expr'],
            // the expression's whitespace (spaces, new lines) is normalised
            ['aardvark_tweaks_ping', 'default', '*/10 * * * *', 'crontab/default/jobs/aardvark_tweaks_ping/schedule/cron_expr'],
        ], self::jobRows($r['jobs']));
        foreach ($r['jobs'] as $job) {
            self::assertFalse($job->parallel, $job->code);
            self::assertNull($job->timeout, $job->code);
        }
    }

    public function test_the_factory_makes_each_job_s_callable_from_its_instance_and_method(): void
    {
        $r = $this->reader()->readModules(self::modules());

        self::assertSame([
            ['Magento\Indexer\Cron\ReindexAllInvalid', 'execute'],
            ['Magento\Indexer\Cron\UpdateMview', 'execute'],
            ['Magento\Indexer\Cron\ClearChangelog', 'execute'],
            ['Magento\Framework\MessageQueue\Lock\WriterInterface', 'releaseOutdatedLocks'],
            ['Magento\MessageQueue\Model\Cron\ConsumersRunner', 'run'],
            ['Magento\Sitemap\Model\Observer', 'scheduledGenerateSitemaps'],
            // the later declaration's instance
            ['Aardvark\Tweaks\Cron\FastExport', 'execute'],
            ['Acme\Feeds\Cron\Cleanup', 'execute'],
            // a leading backslash is dropped
            ['Aardvark\Tweaks\Cron\Ping', 'execute'],
        ], $this->calls);
        $jobs = array_column(array_map(fn (Job $j) => [$j->code, $j], $r['jobs']), 1, 0);
        self::assertSame('Magento\Sitemap\Model\Observer::scheduledGenerateSitemaps', ($jobs['sitemap_generate']->run)());
        self::assertSame('Aardvark\Tweaks\Cron\FastExport::execute', ($jobs['acme_feeds_export']->run)());
    }

    public function test_later_files_win_so_the_order_given_decides(): void
    {
        $indexer = self::VENDOR . '/module-indexer/etc/cron_groups.xml';
        $acme = self::ACME . '/cron_groups.xml';

        $r = $this->reader()->readFiles([], [$indexer, $acme]);
        self::assertSame([['index', 1, 10, 2, 10, 60, 1440, true], ['acme_feeds', 5, 10, 5, 10, 120, 1440, true]], self::groupRows($r['groups']));

        // Magento_Indexer's file last: it gives every value of "index", so all of them are its own
        $r = $this->reader()->readFiles([], [$acme, $indexer]);
        self::assertSame([['index', 1, 4, 2, 10, 60, 4320, true], ['acme_feeds', 5, 10, 5, 10, 120, 1440, true]], self::groupRows($r['groups']));

        // Aardvark_Tweaks before Acme_Feeds: Acme_Feeds' schedule and instance win, each value
        // from the file that gave it last
        $r = $this->reader()->readFiles([self::AARDVARK . '/crontab.xml', self::ACME . '/crontab.xml'], [$acme]);
        $export = $r['jobs'][0];
        self::assertSame(['acme_feeds_export', 'acme_feeds', '*/30 * * * *', 'acme_feeds/export/cron_expr'], self::jobRows([$export])[0]);
        self::assertSame('Acme\Feeds\Cron\Export::execute', ($export->run)());
    }

    public function test_a_job_in_a_group_no_cron_groups_xml_declares_runs_with_the_defaults_and_is_named(): void
    {
        $crontab = $this->file('Acme_Reports/etc/crontab.xml', <<<'XML'
            <?xml version="1.0"?>
            <config>
                <group id="acme_reports">
                    <job name="acme_reports_daily" instance="Acme\Reports\Cron\Daily" method="execute">
                        <schedule>0 5 * * *</schedule>
                    </job>
                </group>
                <group id="default">
                    <job name="acme_reports_cleanup" instance="Acme\Reports\Cron\Cleanup" method="execute">
                        <schedule>0 6 * * *</schedule>
                    </job>
                </group>
            </config>
            XML);

        $r = $this->reader()->readFiles([$crontab], []);

        self::assertSame([
            ['acme_reports', 15, 20, 15, 10, 60, 600, false],
            ['default', 15, 20, 15, 10, 60, 600, false],
        ], self::groupRows($r['groups']));
        self::assertSame(['acme_reports_daily', 'acme_reports_cleanup'], array_map(fn (Job $j) => $j->code, $r['jobs']));
        // "default" (which Magento_Cron always declares) is not worth a warning; acme_reports is
        self::assertCount(1, $r['warnings']);
        self::assertStringContainsString($crontab, $r['warnings'][0]);
        self::assertStringContainsString('cron job acme_reports_daily', $r['warnings'][0]);
        self::assertStringContainsString('no cron_groups.xml declares group "acme_reports"', $r['warnings'][0]);
        self::assertStringContainsString('Magento would never schedule', $r['warnings'][0]);
        self::assertStringContainsString('declare <group id="acme_reports"> in the module\'s etc/cron_groups.xml', $r['warnings'][0]);
    }

    public function test_a_job_declared_again_in_another_group_runs_once_in_the_later_group(): void
    {
        $first = $this->file('A/etc/crontab.xml', <<<'XML'
            <config>
                <group id="default">
                    <job name="acme_sync" instance="Acme\Sync\Cron\Run" method="execute">
                        <schedule>*/5 * * * *</schedule>
                    </job>
                </group>
            </config>
            XML);
        $second = $this->file('B/etc/crontab.xml', <<<'XML'
            <config>
                <group id="index">
                    <job name="acme_sync" instance="Acme\Sync\Cron\Run" method="execute"/>
                </group>
            </config>
            XML);

        $r = $this->reader()->readFiles([$first, $second], [self::VENDOR . '/module-indexer/etc/cron_groups.xml']);

        self::assertSame([['acme_sync', 'index', '*/5 * * * *', 'crontab/index/jobs/acme_sync/schedule/cron_expr']], self::jobRows($r['jobs']));
        self::assertCount(1, $r['warnings']);
        self::assertStringContainsString("$second: cron job acme_sync is in group index here and in group default in $first", $r['warnings'][0]);
        self::assertStringContainsString('Magento would run it in both groups', $r['warnings'][0]);
    }

    /**
     * @dataProvider badFiles
     * @param 'crontab'|'groups' $kind
     * @param list<string>       $fragments
     */
    public function test_bad_configuration_is_named_with_its_file_its_job_or_group_and_what_to_fix(
        string $kind,
        string $content,
        array $fragments,
    ): void {
        $path = $this->file("Acme_Bad/etc/$kind.xml", $content);
        try {
            $kind === 'crontab'
                ? $this->reader()->readFiles([$path], [])
                : $this->reader()->readFiles([], [$path]);
            self::fail('no ConfigException');
        } catch (ConfigException $e) {
            self::assertInstanceOf(\InvalidArgumentException::class, $e);
            self::assertCount(1, $e->errors, $e->getMessage());
            self::assertSame($e->errors[0], $e->getMessage());
            self::assertStringStartsWith("$path: ", $e->getMessage());
            foreach ($fragments as $fragment) {
                self::assertStringContainsString($fragment, $e->getMessage());
            }
        }
    }

    /** @return array<string, array{string, string, list<string>}> */
    public static function badFiles(): array
    {
        $job = static fn (string $inner, string $attributes = 'instance="Acme\Bad\Cron\Export" method="execute"') => <<<XML
            <?xml version="1.0"?>
            <config>
                <group id="default">
                    <job name="acme_bad_export" $attributes>
                        $inner
                    </job>
                </group>
            </config>
            XML;
        $group = static fn (string $inner, string $id = 'index') => <<<XML
            <?xml version="1.0"?>
            <config>
                <group id="$id">
                    $inner
                </group>
            </config>
            XML;

        return [
            // files
            'malformed XML (a tag not closed)' => ['crontab', "<config>\n<group id=\"default\">\n<job name=\"x\" instance=\"A\\B\" method=\"execute\">\n</group>\n</config>", ['malformed XML', 'line 4', 'fix the XML']],
            'an empty file' => ['crontab', "\n", ['the file is empty']],
            'a root other than <config>' => ['crontab', '<crontab><group id="default"/></crontab>', ['the root element is <crontab>, expected <config>']],
            'a DOCTYPE (entities are never expanded)' => ['crontab', "<?xml version=\"1.0\"?>\n<!DOCTYPE config [<!ENTITY e \"* * * * *\">]>\n<config/>", ['<!DOCTYPE>', 'remove it']],
            'crontab.xml: an element other than <group>' => ['crontab', '<config><jobs/></config>', ['unknown element <jobs> in <config>']],
            'crontab.xml: a group without id' => ['crontab', '<config><group><job name="a" instance="A\B" method="m"/></group></config>', ['a <group> has no id', 'add id="default"']],
            'crontab.xml: an element other than <job>' => ['crontab', '<config><group id="default"><cron name="a"/></group></config>', ['group default: unknown element <cron>']],
            'crontab.xml: a job without name' => ['crontab', '<config><group id="default"><job instance="A\B" method="m"/></group></config>', ['group default: a <job> has no name', 'job_code']],
            // jobs
            'a job without instance' => ['crontab', $job('<schedule>0 1 * * *</schedule>', 'method="execute"'), ['cron job acme_bad_export (group default): no instance', 'add instance="Vendor\Module\Cron\ClassName"']],
            'a job with an empty instance' => ['crontab', $job('<schedule>0 1 * * *</schedule>', 'instance="" method="execute"'), ['cron job acme_bad_export (group default): no instance']],
            'an instance that is no class name' => ['crontab', $job('<schedule>0 1 * * *</schedule>', 'instance="Acme Bad Export" method="execute"'), ['cron job acme_bad_export (group default): instance "Acme Bad Export" is not a PHP class name']],
            'a job without method' => ['crontab', $job('<schedule>0 1 * * *</schedule>', 'instance="Acme\Bad\Cron\Export"'), ['cron job acme_bad_export (group default): no method', 'add method="execute"']],
            'a method that is no method name' => ['crontab', $job('<schedule>0 1 * * *</schedule>', 'instance="Acme\Bad\Cron\Export" method="execute()"'), ['method "execute()" is not a PHP method name']],
            'a schedule of 4 fields' => ['crontab', $job('<schedule>*/5 * * *</schedule>'), ['cron job acme_bad_export (group default): Invalid cron expression "*/5 * * *"', 'fix its <schedule>']],
            'an hour out of range' => ['crontab', $job('<schedule>0 25 * * *</schedule>'), ['cron job acme_bad_export', 'hour', 'fix its <schedule>']],
            'Magento 1\'s "always" (Magento 2 has none)' => ['crontab', $job('<schedule>always</schedule>'), ['cron job acme_bad_export', '"always" is Magento 1\'s marker']],
            'a misspelt element in a job' => ['crontab', $job('<shedule>0 1 * * *</shedule>'), ['cron job acme_bad_export (group default): unknown element <shedule>', 'a job holds <schedule> and <config_path>']],
            'two schedules' => ['crontab', $job('<schedule>0 1 * * *</schedule><schedule>0 2 * * *</schedule>'), ['cron job acme_bad_export (group default): more than one <schedule>; keep one']],
            'a job twice in one file' => ['crontab', '<config><group id="default"><job name="a" instance="A\B" method="m"><schedule>0 1 * * *</schedule></job><job name="a" instance="A\B" method="m"/></group></config>', ['cron job a is declared twice in this file']],
            // groups
            'cron_groups.xml: a value that is not a number' => ['groups', $group('<schedule_ahead_for>soon</schedule_ahead_for>'), ['group index: <schedule_ahead_for> is "soon"', 'give a whole number of minutes from 1 to 525600']],
            'cron_groups.xml: 0 minutes' => ['groups', $group('<schedule_lifetime>0</schedule_lifetime>'), ['group index: <schedule_lifetime> is "0"']],
            'cron_groups.xml: negative minutes' => ['groups', $group('<history_cleanup_every>-5</history_cleanup_every>'), ['group index: <history_cleanup_every> is "-5"']],
            'cron_groups.xml: a fraction' => ['groups', $group('<schedule_generate_every>1.5</schedule_generate_every>'), ['group index: <schedule_generate_every> is "1.5"']],
            'cron_groups.xml: use_separate_process "true"' => ['groups', $group('<use_separate_process>true</use_separate_process>'), ['group index: <use_separate_process> is "true"; write 1 or 0']],
            'cron_groups.xml: a misspelt element' => ['groups', $group('<schedule_generate>1</schedule_generate>'), ['group index: unknown element <schedule_generate>', '<schedule_generate_every>']],
            'cron_groups.xml: a group without id' => ['groups', '<config><group><schedule_ahead_for>4</schedule_ahead_for></group></config>', ['a <group> has no id']],
            'cron_groups.xml: an id Group refuses' => ['groups', $group('<schedule_ahead_for>4</schedule_ahead_for>', 'acme feeds'), ['group acme feeds: cron group name "acme feeds"', 'a-z, 0-9 and _']],
            'cron_groups.xml: malformed' => ['groups', '<config><group id="index"><schedule_ahead_for>4</schedule_ahead_for></config>', ['malformed XML']],
        ];
    }

    public function test_what_libxml_recovers_from_is_read_as_magento_reads_it(): void
    {
        // xsi: used without xmlns:xsi, as some modules ship it; Magento's Config\Dom reads it
        $crontab = $this->file('Acme_Sloppy/etc/crontab.xml', <<<'XML'
            <?xml version="1.0"?>
            <config xsi:noNamespaceSchemaLocation="urn:magento:module:Magento_Cron:etc/crontab.xsd">
                <group id="default">
                    <job name="acme_sloppy" instance="Acme\Sloppy\Cron\Run" method="execute">
                        <schedule><![CDATA[0 4 * * *]]></schedule>
                    </job>
                </group>
            </config>
            XML);

        $r = $this->reader()->readFiles([$crontab], []);

        self::assertSame([['acme_sloppy', 'default', '0 4 * * *', 'crontab/default/jobs/acme_sloppy/schedule/cron_expr']], self::jobRows($r['jobs']));
    }

    public function test_a_missing_file_is_named(): void
    {
        $missing = sys_get_temp_dir() . '/forklift-no-such-dir/etc/crontab.xml';
        $this->expectException(ConfigException::class);
        $this->expectExceptionMessage("$missing: cannot read the file (missing or not readable)");
        $this->reader()->readFiles([$missing], []);
    }

    public function test_what_the_factory_throws_or_a_non_callable_is_that_job_s_error(): void
    {
        $crontab = $this->file('Acme_Shop/etc/crontab.xml', <<<'XML'
            <config>
                <group id="default">
                    <job name="acme_gone" instance="Acme\Shop\Cron\Gone" method="execute"><schedule>0 1 * * *</schedule></job>
                    <job name="acme_odd" instance="Acme\Shop\Cron\Odd" method="execute"><schedule>0 2 * * *</schedule></job>
                    <job name="acme_fine" instance="Acme\Shop\Cron\Fine" method="execute"><schedule>0 3 * * *</schedule></job>
                </group>
            </config>
            XML);
        $reader = new Magento2Reader(static function (string $instance, string $method) {
            return match ($instance) {
                'Acme\Shop\Cron\Gone' => throw new \Error("Class \"$instance\" not found"),
                'Acme\Shop\Cron\Odd' => 'not a function',
                default => static fn () => null,
            };
        });

        $r = $reader->readFiles([$crontab], [], strict: false);

        self::assertSame(['acme_fine'], array_map(fn (Job $j) => $j->code, $r['jobs']));
        self::assertSame([
            "$crontab: cron job acme_gone (group default): cannot make Acme\\Shop\\Cron\\Gone::execute(): Class \"Acme\\Shop\\Cron\\Gone\" not found;"
                . ' fix the job\'s instance and method (does the class exist, is the method public?)',
            "$crontab: cron job acme_odd (group default): the factory gave string for Acme\\Shop\\Cron\\Odd::execute(), not a callable;"
                . ' fix the factory or the job\'s instance and method',
        ], $r['errors']);
    }

    public function test_lenient_mode_keeps_the_good_jobs_and_names_the_bad_ones(): void
    {
        $crontab = $this->file('Acme_Mixed/etc/crontab.xml', <<<'XML'
            <?xml version="1.0"?>
            <config>
                <group id="default">
                    <job name="acme_good" instance="Acme\Mixed\Cron\Good" method="execute">
                        <schedule>*/15 * * * *</schedule>
                    </job>
                    <job name="acme_bad_expression" instance="Acme\Mixed\Cron\Bad" method="execute">
                        <schedule>*/15 * * * * * *</schedule>
                    </job>
                    <job name="acme_no_method" instance="Acme\Mixed\Cron\NoMethod">
                        <schedule>0 1 * * *</schedule>
                    </job>
                    <job name="acme_from_config" instance="Acme\Mixed\Cron\FromConfig" method="execute">
                        <config_path>acme/mixed/cron_expr</config_path>
                    </job>
                </group>
            </config>
            XML);
        $broken = $this->file('Acme_Broken/etc/crontab.xml', '<config><group id="default"><job name="acme_lost"');
        $groups = $this->file('Acme_Mixed/etc/cron_groups.xml', <<<'XML'
            <config>
                <group id="default">
                    <schedule_ahead_for>twenty</schedule_ahead_for>
                    <schedule_lifetime>30</schedule_lifetime>
                </group>
            </config>
            XML);

        $r = $this->reader()->readFiles([$crontab, $broken, self::ACME . '/crontab.xml'], [$groups, self::ACME . '/cron_groups.xml'], strict: false);

        self::assertSame([
            ['acme_good', 'default', '*/15 * * * *', 'crontab/default/jobs/acme_good/schedule/cron_expr'],
            ['acme_from_config', 'default', '', 'acme/mixed/cron_expr'],
            ['acme_feeds_export', 'acme_feeds', '*/30 * * * *', 'acme_feeds/export/cron_expr'],
            ['acme_feeds_cleanup', 'default', '15 3 * * *', 'crontab/default/jobs/acme_feeds_cleanup/schedule/cron_expr'],
            ['indexer_clean_all_changelogs', 'index', '30 */2 * * *', 'crontab/index/jobs/indexer_clean_all_changelogs/schedule/cron_expr'],
        ], self::jobRows($r['jobs']));
        // the bad value leaves the default; the good one is read
        self::assertSame(['default', 15, 20, 30, 10, 60, 600, false], self::groupRows($r['groups'])[0]);
        self::assertCount(4, $r['errors']);
        self::assertStringStartsWith("$groups: group default: <schedule_ahead_for> is \"twenty\"", $r['errors'][0]);
        self::assertStringStartsWith("$broken: malformed XML", $r['errors'][1]);
        self::assertStringStartsWith("$crontab: cron job acme_bad_expression (group default): Invalid cron expression", $r['errors'][2]);
        self::assertStringStartsWith("$crontab: cron job acme_no_method (group default): no method", $r['errors'][3]);
    }

    public function test_strict_mode_names_every_problem_in_one_exception(): void
    {
        $crontab = $this->file('Acme_Two/etc/crontab.xml', <<<'XML'
            <config>
                <group id="default">
                    <job name="acme_one" instance="Acme\Two\Cron\One" method="execute"><schedule>61 * * * *</schedule></job>
                    <job name="acme_two" method="execute"><schedule>0 1 * * *</schedule></job>
                    <job name="acme_three" instance="Acme\Two\Cron\Three" method="execute"><schedule>0 1 * * *</schedule></job>
                </group>
            </config>
            XML);

        try {
            $this->reader()->readFiles([$crontab], []);
            self::fail('no ConfigException');
        } catch (ConfigException $e) {
            self::assertCount(2, $e->errors);
            self::assertStringContainsString('cron job acme_one', $e->errors[0]);
            self::assertStringContainsString('cron job acme_two', $e->errors[1]);
            self::assertSame(implode("\n", $e->errors), $e->getMessage());
        }
    }

    public function test_read_modules_follows_module_xml_sequences_and_names_a_cycle(): void
    {
        $module = fn (string $dir, string $name, array $after, string $schedule) => [
            $this->file("code/$dir/etc/module.xml", sprintf(
                '<config><module name="%s"><sequence>%s</sequence></module></config>',
                $name,
                implode('', array_map(fn ($m) => "<module name=\"$m\"/>", $after))
            )),
            $this->file("code/$dir/etc/crontab.xml", sprintf(
                '<config><group id="default"><job name="shared_job" instance="%s\Cron" method="execute"><schedule>%s</schedule></job></group></config>',
                str_replace('_', '\\', $name),
                $schedule
            )),
        ];
        // by name: Alpha_One, Magento_Late (Magento_ first), Zulu_Two; Alpha_One must follow Zulu_Two
        $module('Alpha/One', 'Alpha_One', ['Zulu_Two'], '0 1 * * *');
        $module('Magento/Late', 'Magento_Late', [], '0 2 * * *');
        $module('Zulu/Two', 'Zulu_Two', ['Magento_Late'], '0 3 * * *');

        $r = $this->reader()->readModules("$this->dir/code");
        self::assertSame([['shared_job', 'default', '0 1 * * *', 'crontab/default/jobs/shared_job/schedule/cron_expr']], self::jobRows($r['jobs']));
        self::assertSame('Alpha\One\Cron::execute', ($r['jobs'][0]->run)());

        $module('Magento/Late', 'Magento_Late', ['Alpha_One'], '0 2 * * *');
        try {
            $this->reader()->readModules("$this->dir/code");
            self::fail('no ConfigException');
        } catch (ConfigException $e) {
            self::assertStringContainsString('circular <sequence>: ', $e->getMessage());
            self::assertStringContainsString('Magento_Late -> Alpha_One -> Zulu_Two -> Magento_Late', $e->getMessage());
        }

        $this->expectException(ConfigException::class);
        $this->expectExceptionMessage("$this->dir/nothing: not a directory; give Magento's app/code or vendor directory");
        $this->reader()->readModules("$this->dir/nothing");
    }
}
