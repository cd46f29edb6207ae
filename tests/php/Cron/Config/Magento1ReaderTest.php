<?php

declare(strict_types=1);

namespace Forklift\Tests\Cron\Config;

use Forklift\Cron\Config\ConfigException;
use Forklift\Cron\Config\Magento1Reader;
use Forklift\Cron\Group;
use Forklift\Cron\Job;
use PHPUnit\Framework\TestCase;

/**
 * Forklift\Cron\Config\Magento1Reader on Magento 1 / OpenMage modules' config.xml (fixtures/m1:
 * Mage_Cron's settings, Mage_Catalog and Mage_Sitemap jobs, Acme_Queue's "always" jobs and a
 * default-scope job, Acme_Reports changing a schedule and a setting), and on bad files written
 * by each test.
 *
 * Needs only php/autoload.php, not the extension.
 */
final class Magento1ReaderTest extends TestCase
{
    private const M1 = __DIR__ . '/fixtures/m1/app/code';
    private const CRON = self::M1 . '/core/Mage/Cron/etc/config.xml';
    private const CATALOG = self::M1 . '/core/Mage/Catalog/etc/config.xml';
    private const SITEMAP = self::M1 . '/core/Mage/Sitemap/etc/config.xml';
    private const QUEUE = self::M1 . '/community/Acme/Queue/etc/config.xml';
    private const REPORTS = self::M1 . '/local/Acme/Reports/etc/config.xml';

    /** @var list<array{string, string}> the factory's calls: model alias, method */
    private array $calls = [];
    /** @var list<string> */
    private array $files = [];

    protected function tearDown(): void
    {
        foreach ($this->files as $f) {
            @unlink($f);
        }
    }

    private function reader(): Magento1Reader
    {
        return new Magento1Reader(function (string $model, string $method): \Closure {
            $this->calls[] = [$model, $method];
            return static fn () => "$model::$method";
        });
    }

    private function file(string $content): string
    {
        $path = tempnam(sys_get_temp_dir(), 'forklift-m1-config-');
        file_put_contents($path, $content);
        return $this->files[] = $path;
    }

    /** @return list<string> in Magento 1's module order */
    private static function shop(): array
    {
        return [self::CRON, self::CATALOG, self::SITEMAP, self::QUEUE, self::REPORTS];
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

    public function test_one_default_group_from_system_cron_and_an_always_lane(): void
    {
        $r = $this->reader()->readFiles(self::shop());

        self::assertSame([
            // Mage_Cron's <default><system><cron>, schedule_ahead_for changed by Acme_Reports
            ['default', 15, 30, 15, 10, 60, 600, false],
            // every minute, a row not started within its minute missed; history as "default"
            ['always', 1, 1, 1, 10, 60, 600, false],
        ], self::groupRows($r['groups']));
        self::assertSame([], $r['errors']);
        self::assertSame([], $r['warnings']);
    }

    public function test_jobs_have_their_codes_groups_schedules_and_config_paths(): void
    {
        $r = $this->reader()->readFiles(self::shop());

        self::assertSame([
            // Acme_Reports (loaded later) changes the cron_expr
            ['catalog_product_index_price_reindex_all', 'default', '15 4 * * *', null],
            // no schedule: the store configuration may give one
            ['catalog_product_alert', 'default', '', 'crontab/jobs/catalog_product_alert/schedule/cron_expr'],
            ['sitemap_generate', 'default', '', 'sitemap/generate/cron_expr'],
            // "always": every minute, in the always lane
            ['acme_queue_process', 'always', '* * * * *', null],
            ['acme_queue_heartbeat', 'always', '* * * * *', null],
            // declared at the default scope: the admin's value at that path wins
            ['acme_queue_report', 'default', '30 6 * * 1', 'crontab/jobs/acme_queue_report/schedule/cron_expr'],
        ], self::jobRows($r['jobs']));
    }

    public function test_the_factory_gets_the_model_alias_and_the_method(): void
    {
        $r = $this->reader()->readFiles(self::shop());

        self::assertSame([
            ['catalog/observer', 'reindexProductPrices'],
            ['catalog/observer', 'sendProductAlerts'],
            ['sitemap/observer', 'scheduledGenerateSitemaps'],
            ['acme_queue/worker', 'processQueue'],
            ['acme_queue/worker', 'heartbeat'],
            ['acme_queue/report', 'mailWeekly'],
        ], $this->calls);
        self::assertSame('acme_queue/worker::processQueue', ($r['jobs'][3]->run)());
    }

    public function test_later_files_win_so_the_order_given_decides(): void
    {
        // without Acme_Reports: Mage_Catalog's schedule, Mage_Cron's values
        $r = $this->reader()->readFiles([self::CRON, self::CATALOG]);
        self::assertSame(['catalog_product_index_price_reindex_all', 'default', '0 2 * * *', null], self::jobRows($r['jobs'])[0]);
        self::assertSame([['default', 15, 20, 15, 10, 60, 600, false]], self::groupRows($r['groups']));

        // Acme_Reports first: Mage_Catalog's and Mage_Cron's files come later and win
        $r = $this->reader()->readFiles([self::REPORTS, self::CATALOG, self::CRON]);
        self::assertSame(['catalog_product_index_price_reindex_all', 'default', '0 2 * * *', null], self::jobRows($r['jobs'])[0]);
        self::assertSame([['default', 15, 20, 15, 10, 60, 600, false]], self::groupRows($r['groups']));
    }

    public function test_no_always_job_no_always_group_and_defaults_without_mage_cron(): void
    {
        $r = $this->reader()->readFiles([self::CATALOG]);

        self::assertSame([['default', 15, 20, 15, 10, 60, 600, false]], self::groupRows($r['groups']));
        self::assertEquals(Group::magentoDefault(), $r['groups'][0]);
    }

    public function test_the_always_lane_keeps_history_as_the_shop_does(): void
    {
        $settings = $this->file(<<<'XML'
            <config>
                <default>
                    <system>
                        <cron>
                            <history_cleanup_every>5</history_cleanup_every>
                            <history_success_lifetime>30</history_success_lifetime>
                            <history_failure_lifetime>1440</history_failure_lifetime>
                            <error_email_template>cron_error</error_email_template>
                        </cron>
                    </system>
                </default>
            </config>
            XML);

        $r = $this->reader()->readFiles([self::CRON, self::QUEUE, $settings]);

        self::assertSame([
            ['default', 15, 20, 15, 5, 30, 1440, false],
            ['always', 1, 1, 1, 5, 30, 1440, false],
        ], self::groupRows($r['groups']));
        self::assertEquals(Magento1Reader::alwaysGroup($r['groups'][0]), $r['groups'][1]);
    }

    public function test_a_job_in_both_trees_runs_its_crontab_model_on_its_default_scope_schedule(): void
    {
        $config = $this->file(<<<'XML'
            <config>
                <crontab>
                    <jobs>
                        <acme_feed_export>
                            <run><model>acme_feed/export::run</model></run>
                        </acme_feed_export>
                        <acme_feed_ping>
                            <schedule><cron_expr>*/5 * * * *</cron_expr></schedule>
                            <run><model>acme_feed/ping::run</model></run>
                        </acme_feed_ping>
                    </jobs>
                </crontab>
                <default>
                    <crontab>
                        <jobs>
                            <acme_feed_export>
                                <schedule><cron_expr>0 */6 * * *</cron_expr></schedule>
                                <run><model>acme_feed/unused::run</model></run>
                            </acme_feed_export>
                            <acme_feed_ping>
                                <schedule><cron_expr>0 * * * *</cron_expr></schedule>
                            </acme_feed_ping>
                        </jobs>
                    </crontab>
                </default>
            </config>
            XML);

        $r = $this->reader()->readFiles([$config]);

        self::assertSame([
            ['acme_feed_export', 'default', '0 */6 * * *', 'crontab/jobs/acme_feed_export/schedule/cron_expr'],
            ['acme_feed_ping', 'default', '*/5 * * * *', null],
        ], self::jobRows($r['jobs']));
        self::assertSame([['acme_feed/export', 'run'], ['acme_feed/ping', 'run']], $this->calls);
    }

    public function test_a_later_empty_cron_expr_disables_as_magento_s_config_merge_does(): void
    {
        $off = $this->file(<<<'XML'
            <config>
                <crontab>
                    <jobs>
                        <catalog_product_index_price_reindex_all>
                            <schedule><cron_expr></cron_expr></schedule>
                        </catalog_product_index_price_reindex_all>
                    </jobs>
                </crontab>
            </config>
            XML);

        $r = $this->reader()->readFiles([self::CATALOG, $off]);

        self::assertSame(
            ['catalog_product_index_price_reindex_all', 'default', '', 'crontab/jobs/catalog_product_index_price_reindex_all/schedule/cron_expr'],
            self::jobRows($r['jobs'])[0]
        );
    }

    /**
     * @dataProvider badFiles
     * @param list<string> $fragments
     */
    public function test_bad_configuration_is_named_with_its_file_its_job_and_what_to_fix(string $content, array $fragments): void
    {
        $path = $this->file($content);
        try {
            $this->reader()->readFiles([$path]);
            self::fail('no ConfigException');
        } catch (ConfigException $e) {
            self::assertInstanceOf(\InvalidArgumentException::class, $e);
            self::assertCount(1, $e->errors, $e->getMessage());
            self::assertStringStartsWith("$path: ", $e->getMessage());
            foreach ($fragments as $fragment) {
                self::assertStringContainsString($fragment, $e->getMessage());
            }
        }
    }

    /** @return array<string, array{string, list<string>}> */
    public static function badFiles(): array
    {
        $job = static fn (string $inner) => <<<XML
            <?xml version="1.0"?>
            <config>
                <crontab>
                    <jobs>
                        <acme_export>
                            $inner
                        </acme_export>
                    </jobs>
                </crontab>
            </config>
            XML;

        return [
            'malformed XML' => ["<config>\n<crontab>\n<jobs>\n</crontab>\n</config>", ['malformed XML', 'line 4', 'fix the XML']],
            'a root other than <config>' => ['<crontab><jobs/></crontab>', ['the root element is <crontab>, expected <config>']],
            'a job without <run>' => [$job('<schedule><cron_expr>0 1 * * *</cron_expr></schedule>'), ['cron job acme_export: no <run><model>', 'e.g. catalog/observer::reindexAll']],
            'an empty <model>' => [$job('<schedule><cron_expr>0 1 * * *</cron_expr></schedule><run><model> </model></run>'), ['cron job acme_export: no <run><model>']],
            'a model without ::method' => [$job('<schedule><cron_expr>0 1 * * *</cron_expr></schedule><run><model>acme/export</model></run>'), ['cron job acme_export: <run><model> is "acme/export"; write it as alias/model::method']],
            'a class name for a model' => [$job('<schedule><cron_expr>0 1 * * *</cron_expr></schedule><run><model>Acme_Export_Model_Observer::run</model></run>'), ['<run><model> is "Acme_Export_Model_Observer::run"']],
            'a bad cron_expr' => [$job('<schedule><cron_expr>0 1 * *</cron_expr></schedule><run><model>acme/export::run</model></run>'), ['cron job acme_export: Invalid cron expression "0 1 * *"', 'fix its <schedule><cron_expr>']],
            '"Always" is not "always"' => [$job('<schedule><cron_expr>Always</cron_expr></schedule><run><model>acme/export::run</model></run>'), ['cron job acme_export: Invalid cron expression "Always"']],
            'a <system><cron> value that is not minutes' => ['<config><default><system><cron><schedule_lifetime>fifteen</schedule_lifetime></cron></system></default></config>', ['<default><system><cron><schedule_lifetime> is "fifteen"', 'whole number of minutes']],
        ];
    }

    public function test_lenient_mode_keeps_the_good_jobs_and_names_the_bad_ones(): void
    {
        $mixed = $this->file(<<<'XML'
            <config>
                <crontab>
                    <jobs>
                        <acme_no_run><schedule><cron_expr>0 1 * * *</cron_expr></schedule></acme_no_run>
                        <acme_bad_expr>
                            <schedule><cron_expr>every day</cron_expr></schedule>
                            <run><model>acme/job::run</model></run>
                        </acme_bad_expr>
                        <acme_good>
                            <schedule><cron_expr>0 3 * * *</cron_expr></schedule>
                            <run><model>acme/job::run</model></run>
                        </acme_good>
                    </jobs>
                </crontab>
            </config>
            XML);
        $broken = $this->file('<config><crontab>');

        $r = $this->reader()->readFiles([self::CRON, $mixed, $broken, self::QUEUE], strict: false);

        self::assertSame([
            ['acme_good', 'default', '0 3 * * *', null],
            ['acme_queue_process', 'always', '* * * * *', null],
            ['acme_queue_heartbeat', 'always', '* * * * *', null],
            ['acme_queue_report', 'default', '30 6 * * 1', 'crontab/jobs/acme_queue_report/schedule/cron_expr'],
        ], self::jobRows($r['jobs']));
        self::assertCount(3, $r['errors']);
        self::assertStringStartsWith("$broken: malformed XML", $r['errors'][0]);
        self::assertStringStartsWith("$mixed: cron job acme_no_run: no <run><model>", $r['errors'][1]);
        self::assertStringStartsWith("$mixed: cron job acme_bad_expr: Invalid cron expression \"every day\"", $r['errors'][2]);
    }
}
