<?php

declare(strict_types=1);

namespace Forklift\Tests\Cron;

use Forklift\Cron\Expression;
use Forklift\Cron\InvalidExpressionException;
use PHPUnit\Framework\TestCase;

/**
 * Pins Forklift\Cron\Expression to Magento's cron rules
 * (Magento\Cron\Model\Schedule::setCronExpr(), trySchedule(),
 * matchCronExpression(); ProcessCronQueueObserver::saveSchedule()'s walk over
 * whole UTC minutes; Magento 1's "always"). Each row is named after the
 * Magento behaviour it reproduces.
 *
 * Needs only php/autoload.php, not the extension.
 */
final class ExpressionTest extends TestCase
{
    /**
     * The time is read in the zone (a time with an explicit offset or Z is
     * that instant), and the fields are matched in the zone.
     *
     * @dataProvider matchTable
     */
    public function testMatchesLikeMagento(string $expr, string $time, string $zone, bool $expected): void
    {
        $tz = new \DateTimeZone($zone);
        $at = new \DateTimeImmutable($time, $tz);

        self::assertSame(
            $expected,
            (new Expression($expr))->matches($at, $tz),
            sprintf('"%s" at %s read in %s', $expr, $at->format(DATE_ATOM), $zone),
        );
    }

    /**
     * @return array<string, array{string, string, string, bool}>
     */
    public static function matchTable(): array
    {
        return [
            // Fields, and the minute of the scheduled time
            '"*" in every field matches every minute' => ['* * * * *', '2026-07-04 13:37', 'UTC', true],
            'all five fields given and matching (14:15 on 13 December)' => ['15 14 13 12 *', '2011-12-13 14:15', 'UTC', true],
            'one field off (month 11) and the whole expression fails' => ['15 14 13 11 *', '2011-12-13 14:15', 'UTC', false],
            'values compared as numbers: "5" matches date("i") "05"' => ['5 4 * * *', '2026-07-04 04:05', 'UTC', true],
            'leading zeros in the expression are the same numbers' => ['05 04 * * *', '2026-07-04 04:05', 'UTC', true],
            'the minute of the time is matched, its seconds ignored' => ['5 4 * * *', '2026-07-04 04:05:59', 'UTC', true],
            'the next minute is another minute' => ['5 4 * * *', '2026-07-04 04:06:00', 'UTC', false],
            'a sixth field is accepted and ignored (Magento reads five): "2099" still runs in 2026' => ['0 12 * * * 2099', '2026-07-04 12:00', 'UTC', true],
            'fields are split on any run of whitespace (preg_split on \s+)' => ["  0\t12  * *\n*  ", '2026-07-04 12:00', 'UTC', true],

            // Steps count from 0
            '"*/2" in day-of-month counts from 0: even days, the 4th' => ['0 0 */2 * *', '2026-03-04 00:00', 'UTC', true],
            '"*/2" in day-of-month: not the 1st (Vixie cron runs on 1, 3, 5, ...)' => ['0 0 */2 * *', '2026-03-01 00:00', 'UTC', false],
            '"*/2" in day-of-month: not the 31st' => ['0 0 */2 * *', '2026-03-31 00:00', 'UTC', false],
            '"*/5" in hour: 20:00' => ['0 */5 * * *', '2026-07-04 20:00', 'UTC', true],
            '"*/5" in hour: not 21:00' => ['0 */5 * * *', '2026-07-04 21:00', 'UTC', false],
            '"*/3" in month counts from 0: March (Vixie: Jan, Apr, Jul, Oct)' => ['0 0 1 */3 *', '2026-03-01 00:00', 'UTC', true],
            '"*/3" in month: not January' => ['0 0 1 */3 *', '2026-01-01 00:00', 'UTC', false],
            '"*/12" in month is December only' => ['0 0 1 */12 *', '2026-12-01 00:00', 'UTC', true],
            '"*/2" in day-of-week counts from 0: Sunday' => ['0 0 * * */2', '2026-01-04 00:00', 'UTC', true],
            '"*/2" in day-of-week: not Monday' => ['0 0 * * */2', '2026-01-05 00:00', 'UTC', false],

            // a-b/n counts from a, a/n is "congruent to a"
            '"a-b/n" counts from a (Magento 2 offsets by the range start): 10-59/7 at :17' => ['10-59/7 * * * *', '2026-07-04 10:17', 'UTC', true],
            '"a-b/n" not at :14, where Magento 1 (counting from 0) ran it' => ['10-59/7 * * * *', '2026-07-04 10:14', 'UTC', false],
            '"a-b/n" stays inside its range: 10-20/5 not at :25' => ['10-20/5 * * * *', '2026-07-04 10:25', 'UTC', false],
            '"a/n" matches values congruent to a, also below a: 20/15 at :05' => ['20/15 * * * *', '2026-07-04 10:05', 'UTC', true],
            '"a/n": 20/15 at :20' => ['20/15 * * * *', '2026-07-04 10:20', 'UTC', true],
            '"a/n": 20/15 not at :00' => ['20/15 * * * *', '2026-07-04 10:00', 'UTC', false],
            '"a/n" in day-of-month: 1/2 is the odd days, the 3rd' => ['0 0 1/2 * *', '2026-03-03 00:00', 'UTC', true],

            // Ranges and lists
            'a range includes both ends: 9-17 at 17:00' => ['0 9-17 * * *', '2026-07-04 17:00', 'UTC', true],
            'a range ends at its end: 9-17 not at 18:00' => ['0 9-17 * * *', '2026-07-04 18:00', 'UTC', false],
            'a list matches any item: 0,15,30,45 at :30' => ['0,15,30,45 * * * *', '2026-07-04 10:30', 'UTC', true],
            'a list matches no other value: not at :31' => ['0,15,30,45 * * * *', '2026-07-04 10:31', 'UTC', false],
            'lists of ranges and steps (Magento\'s own example 0-5,10-59/5) at :55' => ['0-5,10-59/5 * * * *', '2026-07-04 10:55', 'UTC', true],
            'lists of ranges and steps: not at :07' => ['0-5,10-59/5 * * * *', '2026-07-04 10:07', 'UTC', false],
            '"*" inside a list matches everything' => ['0,1,* * * * *', '2026-07-04 10:42', 'UTC', true],

            // Names
            'month name "jan"' => ['0 0 1 jan *', '2026-01-01 00:00', 'UTC', true],
            'names are case-insensitive: "JAN"' => ['0 0 1 JAN *', '2026-01-01 00:00', 'UTC', true],
            'full names are read by their first three letters: january-june/2 is Jan, Mar, May (March)' => ['0 0 1 january-june/2 *', '2026-03-01 00:00', 'UTC', true],
            'january-june/2: not February' => ['0 0 1 january-june/2 *', '2026-02-01 00:00', 'UTC', false],
            'weekday range mon-fri: Friday' => ['0 9 * * mon-fri', '2026-02-13 09:00', 'UTC', true],
            'weekday range mon-fri: not Saturday' => ['0 9 * * mon-fri', '2026-01-10 09:00', 'UTC', false],
            'full weekday names: "Wednesday"' => ['0 9 * * Wednesday', '2026-01-07 09:00', 'UTC', true],
            '"sun" is 0' => ['0 0 * * sun', '2026-01-04 00:00', 'UTC', true],

            // Weekday 0-6, and 7
            'day-of-week 0 is Sunday (date("w"))' => ['0 0 * * 0', '2026-01-04 00:00', 'UTC', true],
            '"1-7" is Monday to Saturday: date("w") never gives 7, so not Sunday' => ['0 0 * * 1-7', '2026-01-04 00:00', 'UTC', false],
            '"1-7" includes Saturday' => ['0 0 * * 1-7', '2026-01-10 00:00', 'UTC', true],
            '"0-7" is every day, Sunday through 0' => ['0 0 * * 0-7', '2026-01-04 00:00', 'UTC', true],
            '"5-7" is Friday and Saturday' => ['0 0 * * 5-7', '2026-01-10 00:00', 'UTC', true],

            // Day-of-month AND day-of-week
            'day-of-month AND day-of-week: "0 0 13 * 5" on Friday 13 February 2026' => ['0 0 13 * 5', '2026-02-13 00:00', 'UTC', true],
            'AND: not on Monday 13 April 2026 (Vixie cron ORs and would run)' => ['0 0 13 * 5', '2026-04-13 00:00', 'UTC', false],
            'AND: not on Friday 20 February 2026 (Vixie cron ORs and would run)' => ['0 0 13 * 5', '2026-02-20 00:00', 'UTC', false],
            'AND: "0 0 1 * 1" on Monday 1 June 2026' => ['0 0 1 * 1', '2026-06-01 00:00', 'UTC', true],
            '"0 0 31 2 *" is accepted and never matches' => ['0 0 31 2 *', '2026-02-28 00:00', 'UTC', false],

            // Time zone: fields read in the configured zone
            'the configured zone: 09:00 UTC is 10:00 in Europe/Berlin' => ['0 10 * * *', '2026-01-15T09:00:00Z', 'Europe/Berlin', true],
            'the same instant read in UTC is 09:00' => ['0 10 * * *', '2026-01-15T09:00:00Z', 'UTC', false],
            'summer time: 08:00 UTC is 10:00 CEST' => ['0 10 * * *', '2026-07-15T08:00:00Z', 'Europe/Berlin', true],
            'the zone moves the weekday: Sunday 23:30 UTC is Monday 00:30 in Berlin' => ['30 0 * * 1', '2026-01-04T23:30:00Z', 'Europe/Berlin', true],
            'offsets in quarter hours: 00:00 UTC is 05:45 in Asia/Kathmandu' => ['45 5 * * *', '2026-01-15T00:00:00Z', 'Asia/Kathmandu', true],

            // DST in Europe/Berlin
            'no 02:30 on 2026-03-29 in Berlin: PHP reads it as 03:30 CEST, and Magento never sees 02:30 that day' => ['30 2 * * *', '2026-03-29 02:30', 'Europe/Berlin', false],
            'that same DateTime is 03:30' => ['30 3 * * *', '2026-03-29 02:30', 'Europe/Berlin', true],
            '02:30 happens twice on 2026-10-25 in Berlin: first in CEST (00:30 UTC)' => ['30 2 * * *', '2026-10-25T00:30:00Z', 'Europe/Berlin', true],
            '...and again in CET (01:30 UTC)' => ['30 2 * * *', '2026-10-25T01:30:00Z', 'Europe/Berlin', true],
        ];
    }

    /**
     * @dataProvider invalidTable
     */
    public function testRejectsWhatMagentoWouldNotRun(string $expr, ?string $field, string $fragment): void
    {
        try {
            new Expression($expr);
        } catch (InvalidExpressionException $e) {
            self::assertInstanceOf(\InvalidArgumentException::class, $e);
            self::assertStringContainsString(sprintf('Invalid cron expression "%s"', $expr), $e->getMessage());
            self::assertStringContainsString($fragment, $e->getMessage());
            self::assertSame($expr, $e->expression);
            self::assertSame($field, $e->field);
            if ($field !== null) {
                self::assertStringContainsString($field . ' field', $e->getMessage());
                self::assertStringContainsString('allowed: ', $e->getMessage());
            }

            return;
        }
        self::fail(sprintf('"%s" was accepted', $expr));
    }

    /**
     * @return array<string, array{string, ?string, string}>
     */
    public static function invalidTable(): array
    {
        return [
            'Magento needs 5 or 6 fields: none' => ['', null, 'expected 5 fields'],
            '4 fields' => ['1 2 3 4', null, 'got 4'],
            '7 fields' => ['1 2 3 4 5 6 7', null, 'got 7'],
            'Magento 1\'s "always" is not an expression' => ['always', null, 'isAlways()'],
            'minute 60' => ['60 * * * *', 'minute', '60 is out of range; allowed: 0-59'],
            'hour 24' => ['* 24 * * *', 'hour', 'allowed: 0-23'],
            'day-of-month 0' => ['* * 0 * *', 'day-of-month', 'allowed: 1-31'],
            'day-of-month 32' => ['* * 32 * *', 'day-of-month', '32 is out of range'],
            'month 13' => ['* * * 13 *', 'month', 'allowed: 1-12 or jan-dec'],
            'day-of-week 8' => ['* * * * 8', 'day-of-week', 'allowed: 0-6 or sun-sat, 0 = Sunday'],
            '7 alone never matches in Magento' => ['0 0 * * 7', 'day-of-week', 'write 0 or sun for Sunday'],
            '"*/13" in month matches no month' => ['0 0 1 */13 *', 'month', 'matches no value at all'],
            'step 0 (Magento: "Invalid cron expression")' => ['*/0 * * * *', 'minute', 'not a whole number of 1 or more'],
            'step missing (Magento: "expecting numeric modulus")' => ['*/ * * * *', 'minute', 'the step in "*/" is ""'],
            'step not a number' => ['*/x * * * *', 'minute', 'the step in "*/x" is "x"'],
            'two slashes (Magento: "expecting \'match/modulus\'")' => ['1/2/3 * * * *', 'minute', 'more than one "/"'],
            'two dashes (Magento: "expecting \'from-to\' structure")' => ['1-2-3 * * * *', 'minute', 'not a range from-to'],
            'a range that runs backwards, which Magento never matches' => ['5-1 * * * *', 'minute', 'runs backwards'],
            'ranges do not wrap around the week' => ['0 0 * * sat-sun', 'day-of-week', 'runs backwards'],
            'an empty list item' => ['1,,2 * * * *', 'minute', 'a list item is empty'],
            'a lone dash' => ['- * * * *', 'minute', 'has a value missing'],
            'negative numbers' => ['* -1 * * *', 'hour', 'has a value missing'],
            'Quartz "?"' => ['0 0 ? * *', 'day-of-month', '"?" is not a whole number'],
            'Quartz "L"' => ['0 0 L * *', 'day-of-month', '"L" is not a whole number'],
            'Quartz "5#3"' => ['0 0 * * 5#3', 'day-of-week', '"5#3" is not a number or a weekday name'],
            'decimals, which Magento\'s is_numeric() lets through' => ['1.5 * * * *', 'minute', '"1.5" is not a whole number'],
            'a weekday name in the month field, which Magento reads as a number' => ['0 0 1 mon *', 'month', '"mon" is a weekday name'],
            'a month name in the day-of-week field' => ['0 0 * * jan', 'day-of-week', '"jan" is a month name'],
            'a month name in the minute field' => ['jan * * * *', 'minute', 'does not belong in the minute field'],
            'names need three letters' => ['0 0 * * mo', 'day-of-week', '"mo" is not a number or a weekday name'],
            'names are letters only' => ['0 0 1 jan1 *', 'month', '"jan1" is not a number or a month name'],
        ];
    }

    /**
     * @dataProvider nextAfterTable
     */
    public function testNextAfter(string $expr, string $after, string $zone, ?string $expected, int $horizon = 527040): void
    {
        $tz = new \DateTimeZone($zone);
        $next = (new Expression($expr))->nextAfter(new \DateTimeImmutable($after, $tz), $tz, $horizon);

        self::assertSame($expected, $next?->format('Y-m-d\TH:i:sP'));
        if ($next !== null) {
            self::assertSame($zone, $next->getTimezone()->getName());
        }
    }

    /**
     * @return array<string, array{0: string, 1: string, 2: string, 3: ?string, 4?: int}>
     */
    public static function nextAfterTable(): array
    {
        return [
            'the next quarter hour' => ['*/15 * * * *', '2026-07-04 10:07:30', 'UTC', '2026-07-04T10:15:00+00:00'],
            'strictly after: a matching minute is not its own next' => ['0 * * * *', '2026-07-04 10:00:00', 'UTC', '2026-07-04T11:00:00+00:00'],
            'strictly after: nor when $after is inside it' => ['0 * * * *', '2026-07-04 10:00:30', 'UTC', '2026-07-04T11:00:00+00:00'],
            '"*/5" in hour restarts at 0 each day: 20:00, then 00:00' => ['0 */5 * * *', '2026-07-04 20:00', 'UTC', '2026-07-05T00:00:00+00:00'],
            '"*/2" in day-of-month: after the 30th comes the 2nd' => ['0 0 */2 * *', '2026-03-30 00:00', 'UTC', '2026-04-02T00:00:00+00:00'],
            'Friday the 13th from New Year 2026: 13 February' => ['0 0 13 * 5', '2026-01-01 00:00', 'UTC', '2026-02-13T00:00:00+00:00'],
            'Friday the 13th after March 2026: 13 November' => ['0 0 13 * 5', '2026-03-13 00:00', 'UTC', '2026-11-13T00:00:00+00:00'],
            'over the new year' => ['0 0 1 1 *', '2026-12-31 23:59', 'UTC', '2027-01-01T00:00:00+00:00'],
            '29 February is not within the default 366 days' => ['0 0 29 2 *', '2026-03-01 00:00', 'UTC', null],
            '29 February 2028 within two years' => ['0 0 29 2 *', '2026-03-01 00:00', 'UTC', '2028-02-29T00:00:00+00:00', 2 * 527040],
            '31 February never comes' => ['0 0 31 2 *', '2026-03-01 00:00', 'UTC', null],
            'the horizon counts minutes after $after: 60 reach 11:00' => ['0 * * * *', '2026-07-04 10:00', 'UTC', '2026-07-04T11:00:00+00:00', 60],
            'the horizon: 59 minutes do not' => ['0 * * * *', '2026-07-04 10:00', 'UTC', null, 59],
            'the horizon: 0 minutes look at nothing' => ['* * * * *', '2026-07-04 10:00', 'UTC', null, 0],
            'in the configured zone: 10:00 Berlin after 08:00 UTC, returned in Berlin' => ['0 10 * * *', '2026-01-15T08:00:00Z', 'Europe/Berlin', '2026-01-15T10:00:00+01:00'],
            'a fixed-offset zone' => ['0 10 * * *', '2026-01-15 09:30', '+02:00', '2026-01-15T10:00:00+02:00'],
            // DST, spring: 2026-03-29 02:00 CET becomes 03:00 CEST
            '"30 2 * * *" skips 2026-03-29 in Berlin: no UTC minute reads 02:30 that day' => ['30 2 * * *', '2026-03-28 03:00', 'Europe/Berlin', '2026-03-30T02:30:00+02:00'],
            '"*/30" across the gap: 01:30 CET, then 03:00 CEST, 30 real minutes later' => ['*/30 * * * *', '2026-03-29 01:30', 'Europe/Berlin', '2026-03-29T03:00:00+02:00'],
            '"0 3 * * *" on the short night: 03:00 CEST' => ['0 3 * * *', '2026-03-29 00:00', 'Europe/Berlin', '2026-03-29T03:00:00+02:00'],
            // DST, autumn: 2026-10-25 03:00 CEST becomes 02:00 CET
            '"30 2 * * *" on 2026-10-25: first 02:30 CEST' => ['30 2 * * *', '2026-10-25 00:00', 'Europe/Berlin', '2026-10-25T02:30:00+02:00'],
            '...then 02:30 CET, an hour later' => ['30 2 * * *', '2026-10-25T00:30:00Z', 'Europe/Berlin', '2026-10-25T02:30:00+01:00'],
            '...then the next day' => ['30 2 * * *', '2026-10-25T01:30:00Z', 'Europe/Berlin', '2026-10-26T02:30:00+01:00'],
            'a half-hour DST gap: no 02:15 on 2026-10-04 on Lord Howe Island' => ['15 2 * * *', '2026-10-03 12:00', 'Australia/Lord_Howe', '2026-10-05T02:15:00+11:00'],
        ];
    }

    /**
     * Magento's schedule generation tries every whole UTC minute converted to
     * the configured zone; nextAfter() must find the same first minute.
     */
    public function testNextAfterFindsTheMinuteThatMagentosMinuteWalkFinds(): void
    {
        $expressions = ['30 2 * * *', '*/30 * * * *', '0 0 * * *', '15,45 1-3 * * *', '*/7 */5 */2 * *', '59 23 * * 0', '0 2 * 10 sun'];
        $zones = ['UTC', 'Europe/Berlin', 'Australia/Lord_Howe', 'America/Sao_Paulo', 'Asia/Kathmandu', 'Pacific/Apia'];
        $starts = ['2026-03-28 23:00Z', '2026-10-24 23:10Z', '2026-04-04 13:00Z', '2018-11-03 23:00Z', '2011-12-29 09:00Z'];
        $horizon = 3 * 1440;
        foreach ($expressions as $expr) {
            $expression = new Expression($expr);
            foreach ($zones as $zoneName) {
                $zone = new \DateTimeZone($zoneName);
                foreach ($starts as $start) {
                    $after = new \DateTimeImmutable($start);
                    $walked = null;
                    for ($t = $after->getTimestamp() + 60; $t <= $after->getTimestamp() + $horizon * 60; $t += 60) {
                        if ($expression->matches(new \DateTimeImmutable('@' . $t), $zone)) {
                            $walked = $t;
                            break;
                        }
                    }
                    self::assertSame(
                        $walked,
                        $expression->nextAfter($after, $zone, $horizon)?->getTimestamp(),
                        sprintf('"%s" in %s after %s', $expr, $zoneName, $start),
                    );
                }
            }
        }
    }

    public function testNextAfterIsFast(): void
    {
        $zone = new \DateTimeZone('Europe/Berlin');
        $after = new \DateTimeImmutable('2026-03-28 12:34:56', $zone);
        $samples = [];
        foreach (['*/15 * * * *', '0 0 13 * 5', '30 2 * * *', '0 9-17 * * mon-fri', '0 0 31 2 *'] as $expr) {
            $expression = new Expression($expr);
            for ($i = 0; $i < 50; $i++) {
                $t0 = hrtime(true);
                $expression->nextAfter($after, $zone);
                $samples[] = hrtime(true) - $t0;
            }
        }
        sort($samples);
        $median = $samples[intdiv(count($samples), 2)];

        self::assertLessThan(1_000_000, $median, sprintf('median %.1f us', $median / 1000));
    }

    public function testMatchesReadsTheTimesOwnZoneWithoutAZone(): void
    {
        $expression = new Expression('0 10 * * *');

        self::assertTrue($expression->matches(new \DateTimeImmutable('2026-01-15 10:00', new \DateTimeZone('Europe/Berlin'))));
        self::assertFalse($expression->matches(new \DateTimeImmutable('2026-01-15 10:00', new \DateTimeZone('Europe/Berlin')), new \DateTimeZone('UTC')));
        self::assertTrue($expression->matches(new \DateTime('2026-01-15 10:00', new \DateTimeZone('UTC'))));
    }

    public function testNextAfterAnswersInTheZoneOfAfterWithoutAZone(): void
    {
        $next = (new Expression('0 10 * * *'))->nextAfter(new \DateTime('2026-01-15 10:00', new \DateTimeZone('America/New_York')));

        self::assertSame('2026-01-16T10:00:00-05:00', $next?->format('Y-m-d\TH:i:sP'));
        self::assertSame('America/New_York', $next->getTimezone()->getName());
    }

    public function testNextAfterRejectsANegativeHorizon(): void
    {
        $this->expectException(\InvalidArgumentException::class);
        (new Expression('* * * * *'))->nextAfter(new \DateTimeImmutable(), null, -1);
    }

    /**
     * @dataProvider alwaysTable
     */
    public function testIsAlwaysLikeMagento1(string $expr, bool $expected): void
    {
        self::assertSame($expected, Expression::isAlways($expr));
    }

    /**
     * @return array<string, array{string, bool}>
     */
    public static function alwaysTable(): array
    {
        return [
            'Magento 1 runs cron_expr "always" on every cron pass' => ['always', true],
            'compared exactly, as Magento 1 does: not "Always"' => ['Always', false],
            'compared exactly: not " always"' => [' always', false],
            'a cron expression is not "always", even one that runs every minute' => ['* * * * *', false],
            'an empty cron_expr is not "always"' => ['', false],
        ];
    }

    public function testToStringJoinsTheFieldsWithSingleSpaces(): void
    {
        self::assertSame('*/5 9-17 * * mon-fri', (string) new Expression("  */5\t9-17 *  * mon-fri\n"));
        self::assertSame('0 12 * * * 2099', (string) new Expression('0 12 * * * 2099'));
    }
}
