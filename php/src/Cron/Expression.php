<?php

declare(strict_types=1);

namespace Forklift\Cron;

/**
 * A cron expression matched with Magento's rules, not Vixie cron's.
 *
 * A Magento job should run when its author saw it run under Magento, so this
 * class reproduces what Magento 2's Magento\Cron\Model\Schedule does
 * (setCronExpr(), trySchedule(), matchCronExpression(), getNumeric()), and
 * how Magento\Cron\Observer\ProcessCronQueueObserver::saveSchedule() feeds it:
 * one candidate per whole UTC minute, each converted to the configured time
 * zone before its fields are read. Written from those rules, not from
 * Magento's code.
 *
 * The rules:
 *
 *  - Fields are split on runs of whitespace. Five are required: minute,
 *    hour, day-of-month, month, day-of-week. A sixth is accepted and ignored,
 *    as Magento accepts 5 or 6 fields but reads only the first five. 4 or 7
 *    fields are an error.
 *  - Each field is matched by itself and the five results are ANDed. Unlike
 *    Vixie cron, day-of-month and day-of-week are not ORed: "0 0 13 * 5" runs
 *    only on a Friday the 13th.
 *  - A field is a comma list of items; an item matches when any does.
 *    Items: "*", a value "n", a range "a-b" (both ends included), and each of
 *    these with a step "/n" (written "*\/n" below, as "*" and "/" together
 *    would end this comment):
 *      "*\/n"   values v with v % n == 0, counted from 0 in every field:
 *               "*\/2" in day-of-month is the even days 2, 4, ... 30,
 *               "*\/3" in month is Mar, Jun, Sep, Dec, "*\/5" in hour is
 *               0, 5, 10, 15, 20;
 *      "a-b/n"  a <= v <= b and (v - a) % n == 0, counted from a;
 *      "a/n"    (v - a) % n == 0 for every v of the field, including values
 *               below a: "20/15" in minute is 5, 20, 35, 50.
 *    (Magento 1 and Magento 2 before its pull request #28930 counted
 *    "a-b/n" from 0 and matched "a/n" only at a; this class follows the
 *    current Magento 2.)
 *  - Names: jan..dec in month, sun..sat in day-of-week, case-insensitive,
 *    read by their first three letters ("January", "Wednesday" work), also as
 *    range ends ("mon-fri", "january-june/2").
 *  - Day-of-week is 0-6 with 0 = Sunday: Magento compares against PHP's
 *    date('w'). 7 is accepted, as Magento accepts it, but matches no day:
 *    "1-7" is Monday to Saturday, "0-7" every day.
 *  - The minute matched is the minute of the instant; seconds are ignored.
 *  - Fields are read in the time zone given to matches()/nextAfter(), or the
 *    DateTimeInterface's own zone. The caller converts, e.g. to Magento's
 *    general/locale/timezone.
 *  - Across DST changes this behaves like Magento's minute-by-minute walk of
 *    UTC: a local time skipped in spring never matches that day ("30 2 * * *"
 *    does not run on 2026-03-29 in Europe/Berlin), and a local time repeated
 *    in autumn matches both times.
 *
 * Choices made where Magento does not help:
 *
 *  - Magento checks an expression only when it matches a time against it,
 *    and throws CronException then, which stops the schedule generation of
 *    the whole cron group. This class checks everything in the constructor
 *    and throws InvalidExpressionException, naming the expression, the field
 *    and what the field allows.
 *  - Stricter than Magento, which compares with is_numeric() and ignores
 *    anything past a name's first three characters: values are digits only
 *    (leading zeros allowed), names are letters only, month names only in
 *    the month field and weekday names only in the day-of-week field
 *    (Magento would read "mon" in the month field as 1). Values outside a
 *    field (minute 60, day 32, month 13, weekday 8), ranges that run
 *    backwards ("5-1", which Magento never matches), steps of 0 and fields
 *    that can match no value at all ("7" alone in day-of-week, "*\/13" in
 *    month) are errors instead of jobs that never run.
 *  - Combinations that never happen, like "0 0 31 2 *", are accepted, as in
 *    Magento and Vixie cron: matches() is false and nextAfter() null.
 *
 * Not cron expressions, handled by the caller:
 *
 *  - Magento 1's "always" (cron_expr exactly "always"): the job runs on
 *    every cron pass, without a schedule. Test with isAlways() before
 *    constructing; the constructor rejects it with a hint.
 *  - config_path: Magento reads the expression from the store configuration
 *    at that path, and uses <schedule> when that value is empty. Resolve it,
 *    then pass the string here.
 */
final class Expression implements \Stringable
{
    /** Magento 1's cron_expr for jobs run on every cron pass. */
    public const ALWAYS = 'always';

    private const MONTHS = [
        'jan' => 1, 'feb' => 2, 'mar' => 3, 'apr' => 4, 'may' => 5, 'jun' => 6,
        'jul' => 7, 'aug' => 8, 'sep' => 9, 'oct' => 10, 'nov' => 11, 'dec' => 12,
    ];

    private const WEEKDAYS = [
        'sun' => 0, 'mon' => 1, 'tue' => 2, 'wed' => 3, 'thu' => 4, 'fri' => 5, 'sat' => 6,
    ];

    private const FORMS = '*, n, a-b, a,b,c, */n, a-b/n or a/n';

    /**
     * name, lowest and highest value written, lowest and highest value that
     * occurs, names, what is allowed (for messages).
     *
     * @var list<array{string, int, int, int, int, array<string, int>, string}>
     */
    private const FIELDS = [
        ['minute', 0, 59, 0, 59, [], '0-59'],
        ['hour', 0, 23, 0, 23, [], '0-23'],
        ['day-of-month', 1, 31, 1, 31, [], '1-31'],
        ['month', 1, 12, 1, 12, self::MONTHS, '1-12 or jan-dec'],
        ['day-of-week', 0, 7, 0, 6, self::WEEKDAYS,
            '0-6 or sun-sat, 0 = Sunday (7 is accepted but, as in Magento, matches no day)'],
    ];

    private readonly string $text;

    /** @var array<int, true> */
    private readonly array $minutes;
    /** @var array<int, true> */
    private readonly array $hours;
    /** @var array<int, true> */
    private readonly array $days;
    /** @var array<int, true> */
    private readonly array $months;
    /** @var array<int, true> */
    private readonly array $weekdays;

    /** @var array<int, int> minute => first allowed minute >= it, or -1 */
    private readonly array $nextMinute;
    /** @var array<int, int> hour => first allowed hour >= it, or -1 */
    private readonly array $nextHour;
    /** @var array<int, int> day => first allowed day-of-month >= it, or -1 */
    private readonly array $nextDay;
    /** @var array<int, int> month => first allowed month >= it, or -1 */
    private readonly array $nextMonth;
    /** @var array<int, int> weekday => days until an allowed weekday (0 when allowed) */
    private readonly array $weekdayGap;

    /**
     * @throws InvalidExpressionException when Magento would not run it as written; see the class comment
     */
    public function __construct(string $expr)
    {
        $fields = preg_split('/\s+/', $expr, -1, PREG_SPLIT_NO_EMPTY);
        if ($fields === false || count($fields) < 5 || count($fields) > 6) {
            $count = $fields === false ? 0 : count($fields);
            $hint = self::isAlways($expr)
                ? '; "always" is Magento 1\'s marker for a job run on every cron pass, not a cron expression:'
                    . ' check Expression::isAlways() first'
                : '';
            throw new InvalidExpressionException(sprintf(
                'Invalid cron expression "%s": expected 5 fields (minute hour day-of-month month day-of-week),'
                    . ' or 6 of which Magento ignores the last; got %d%s',
                $expr,
                $count,
                $hint,
            ), $expr);
        }

        $sets = [];
        foreach (self::FIELDS as $i => $field) {
            $sets[$i] = self::parseField($expr, $fields[$i], $field);
        }
        [$this->minutes, $this->hours, $this->days, $this->months, $this->weekdays] = $sets;

        $this->nextMinute = self::nextTable($this->minutes, 0, 59);
        $this->nextHour = self::nextTable($this->hours, 0, 23);
        $this->nextDay = self::nextTable($this->days, 1, 31);
        $this->nextMonth = self::nextTable($this->months, 1, 12);
        $gaps = [];
        for ($d = 0; $d < 7; $d++) {
            $k = 0;
            while (!isset($this->weekdays[($d + $k) % 7])) {
                $k++;
            }
            $gaps[$d] = $k;
        }
        $this->weekdayGap = $gaps;
        $this->text = implode(' ', $fields);
    }

    /**
     * Whether a Magento 1 cron_expr is "always": the job runs on every cron
     * pass and has no schedule. Compared exactly (no trimming, case-sensitive),
     * as Magento 1's Mage_Cron_Model_Observer does. Magento 2 has no such
     * value. Not a cron expression: the constructor rejects it.
     */
    public static function isAlways(string $expr): bool
    {
        return $expr === self::ALWAYS;
    }

    /**
     * Whether the minute that holds $at matches, with its fields read in
     * $zone (default: $at's own zone). Seconds are ignored.
     */
    public function matches(\DateTimeInterface $at, ?\DateTimeZone $zone = null): bool
    {
        $local = \DateTimeImmutable::createFromInterface($at);
        if ($zone !== null) {
            $local = $local->setTimezone($zone);
        }

        return $this->matchesLocal($local);
    }

    /**
     * The first whole minute strictly after $after that matches, with fields
     * read in $zone (default: $after's own zone), returned in that zone.
     * Looks at the $horizonMinutes minutes that follow $after's minute (the
     * default is 366 days) and returns null when none of them matches.
     *
     * The same minutes as Magento's schedule generation: whole UTC minutes,
     * so a local time skipped by DST never matches and a repeated one matches
     * twice.
     */
    public function nextAfter(
        \DateTimeInterface $after,
        ?\DateTimeZone $zone = null,
        int $horizonMinutes = 527040,
    ): ?\DateTimeImmutable {
        if ($horizonMinutes < 0) {
            throw new \InvalidArgumentException(sprintf(
                'Forklift\Cron\Expression::nextAfter(): $horizonMinutes must be 0 or more, got %d',
                $horizonMinutes,
            ));
        }
        $zone ??= $after->getTimezone();
        $ts = $after->getTimestamp();
        $minute = $ts - self::mod($ts, 60);
        $t = $minute + 60;
        $end = $minute + $horizonMinutes * 60;
        if ($t > $end) {
            return null;
        }

        // The offset is constant between two transitions, so within such a
        // stretch the search runs on the local calendar with plain arithmetic.
        $transitions = $zone->getTransitions($t, $end);
        if (!is_array($transitions)) {
            $transitions = []; // fixed-offset zones ("+02:00", "CEST") have none
        }
        $k = 0;
        while ($t <= $end) {
            while (isset($transitions[$k]) && $transitions[$k]['ts'] <= $t) {
                $k++;
            }
            $stretchEnd = isset($transitions[$k]) ? (int) $transitions[$k]['ts'] : PHP_INT_MAX;
            $offset = self::instant($t, $zone)->getOffset();
            // With an offset in odd seconds (local mean time of old dates) a UTC
            // minute starts inside a local minute; $shift maps one to the other.
            $shift = $offset - self::mod($offset, 60);
            $last = min($end, $stretchEnd - 1);
            $wall = $this->nextWall($t + $shift, $last + $shift);
            if ($wall !== null) {
                $found = $wall - $shift;
                $at = self::instant($found, $zone);
                if ($this->matchesLocal($at)) {
                    return $at;
                }
                // Unreachable unless the zone's transitions and its conversions disagree:
                // go on from there rather than return a minute that does not match.
                $t = $found + 60;
                continue;
            }
            if ($stretchEnd === PHP_INT_MAX) {
                break;
            }
            $t = $stretchEnd + self::mod(60 - self::mod($stretchEnd, 60), 60);
        }

        return null;
    }

    /** The expression with its fields separated by single spaces. */
    public function __toString(): string
    {
        return $this->text;
    }

    private function matchesLocal(\DateTimeInterface $local): bool
    {
        [$minute, $hour, $day, $month, $weekday] = explode(' ', $local->format('i G j n w'));

        return isset(
            $this->minutes[(int) $minute],
            $this->hours[(int) $hour],
            $this->days[(int) $day],
            $this->months[(int) $month],
            $this->weekdays[(int) $weekday],
        );
    }

    /**
     * The first matching minute at or after the wall-clock minute $wall,
     * counted as if the local calendar had no DST (a UTC timestamp of the
     * local fields), or null after $limit.
     */
    private function nextWall(int $wall, int $limit): ?int
    {
        while ($wall <= $limit) {
            [$y, $mo, $d, $h, $mi, $dow, $monthDays] = array_map(
                'intval',
                explode(' ', gmdate('Y n j G i w t', $wall)),
            );
            if (!isset($this->months[$mo])) {
                $next = $this->nextMonth[$mo];
                $wall = $next >= 0
                    ? gmmktime(0, 0, 0, $next, 1, $y)
                    : gmmktime(0, 0, 0, $this->nextMonth[1], 1, $y + 1);
                continue;
            }
            if (!isset($this->days[$d])) {
                $next = $this->nextDay[$d];
                $wall = $next >= 0 && $next <= $monthDays
                    ? gmmktime(0, 0, 0, $mo, $next, $y)
                    : gmmktime(0, 0, 0, $mo + 1, 1, $y);
                continue;
            }
            $midnight = $wall - $h * 3600 - $mi * 60;
            if (!isset($this->weekdays[$dow])) {
                $wall = $midnight + $this->weekdayGap[$dow] * 86400;
                continue;
            }
            $hour = $this->nextHour[$h];
            if ($hour === $h) {
                $minute = $this->nextMinute[$mi];
                if ($minute >= 0) {
                    $found = $midnight + $h * 3600 + $minute * 60;

                    return $found <= $limit ? $found : null;
                }
                $hour = $h < 23 ? $this->nextHour[$h + 1] : -1;
            }
            if ($hour >= 0) {
                $found = $midnight + $hour * 3600 + $this->nextMinute[0] * 60;

                return $found <= $limit ? $found : null;
            }
            $wall = $midnight + 86400;
        }

        return null;
    }

    /**
     * @param array{string, int, int, int, int, array<string, int>, string} $field
     * @return array<int, true> the values that occur in the field and match
     */
    private static function parseField(string $expr, string $text, array $field): array
    {
        [$name, , , $lowest, $highest] = $field;
        $set = [];
        foreach (explode(',', $text) as $item) {
            if ($item === '') {
                throw self::invalid($expr, $text, $field, 'a list item is empty');
            }
            $step = null;
            $base = $item;
            if (str_contains($item, '/')) {
                $pieces = explode('/', $item);
                if (count($pieces) !== 2) {
                    throw self::invalid($expr, $text, $field, sprintf('"%s" has more than one "/"', $item));
                }
                [$base, $stepText] = $pieces;
                if (!ctype_digit($stepText) || (int) $stepText === 0) {
                    throw self::invalid($expr, $text, $field, sprintf(
                        'the step in "%s" is "%s", not a whole number of 1 or more',
                        $item,
                        $stepText,
                    ));
                }
                $step = (int) $stepText;
            }

            if ($base === '*') {
                $from = $lowest;
                $to = $highest;
                $origin = 0;
            } elseif (str_contains($base, '-')) {
                $ends = explode('-', $base);
                if (count($ends) !== 2) {
                    throw self::invalid($expr, $text, $field, sprintf('"%s" is not a range from-to', $base));
                }
                $from = self::parseValue($expr, $text, $field, $ends[0], $base);
                $to = self::parseValue($expr, $text, $field, $ends[1], $base);
                if ($from > $to) {
                    throw self::invalid($expr, $text, $field, sprintf(
                        'the range "%s" runs backwards (Magento never matches it; ranges do not wrap around)',
                        $base,
                    ));
                }
                $origin = $from;
            } else {
                $origin = self::parseValue($expr, $text, $field, $base, $base);
                // "a/n" is every value congruent to a; "a" alone is just a.
                [$from, $to] = $step === null ? [$origin, $origin] : [$lowest, $highest];
            }

            for ($v = max($from, $lowest), $top = min($to, $highest); $v <= $top; $v++) {
                if ($step === null || ($v - $origin) % $step === 0) {
                    $set[$v] = true;
                }
            }
        }

        if ($set === []) {
            $why = $name === 'day-of-week'
                ? ' (Magento compares against date(\'w\'), 0-6, so 7 never matches: write 0 or sun for Sunday)'
                : ' (Magento would never run it)';
            throw self::invalid($expr, $text, $field, 'it matches no value at all' . $why);
        }
        ksort($set);

        return $set;
    }

    /**
     * @param array{string, int, int, int, int, array<string, int>, string} $field
     */
    private static function parseValue(string $expr, string $text, array $field, string $token, string $part): int
    {
        [$name, $low, $high, , , $names] = $field;
        if ($token === '') {
            throw self::invalid($expr, $text, $field, sprintf('"%s" has a value missing', $part));
        }
        if (ctype_digit($token)) {
            $digits = ltrim($token, '0');
            $value = strlen($digits) > 6 ? PHP_INT_MAX : (int) $digits;
            if ($value < $low || $value > $high) {
                throw self::invalid($expr, $text, $field, sprintf('%s is out of range', $token));
            }

            return $value;
        }
        if (preg_match('/^[a-z]{3,}$/i', $token) === 1) {
            $key = strtolower(substr($token, 0, 3));
            if (isset($names[$key])) {
                return $names[$key];
            }
            $other = match (true) {
                isset(self::MONTHS[$key]) => 'a month name',
                isset(self::WEEKDAYS[$key]) => 'a weekday name',
                default => null,
            };
            if ($other !== null) {
                throw self::invalid($expr, $text, $field, sprintf(
                    '"%s" is %s, which does not belong in the %s field (Magento would read it as %d)',
                    $token,
                    $other,
                    $name,
                    self::MONTHS[$key] ?? self::WEEKDAYS[$key],
                ));
            }
        }
        $what = match ($name) {
            'month' => 'a number or a month name',
            'day-of-week' => 'a number or a weekday name',
            default => 'a whole number',
        };

        throw self::invalid($expr, $text, $field, sprintf('"%s" is not %s', $token, $what));
    }

    /**
     * @param array{string, int, int, int, int, array<string, int>, string} $field
     */
    private static function invalid(string $expr, string $text, array $field, string $problem): InvalidExpressionException
    {
        return new InvalidExpressionException(sprintf(
            'Invalid cron expression "%s": %s field "%s": %s; allowed: %s, written as %s',
            $expr,
            $field[0],
            $text,
            $problem,
            $field[6],
            self::FORMS,
        ), $expr, $field[0]);
    }

    /**
     * @param array<int, true> $set
     * @return array<int, int>
     */
    private static function nextTable(array $set, int $low, int $high): array
    {
        $table = [];
        $next = -1;
        for ($v = $high; $v >= $low; $v--) {
            if (isset($set[$v])) {
                $next = $v;
            }
            $table[$v] = $next;
        }

        return $table;
    }

    private static function instant(int $timestamp, \DateTimeZone $zone): \DateTimeImmutable
    {
        return (new \DateTimeImmutable('@' . $timestamp))->setTimezone($zone);
    }

    private static function mod(int $a, int $n): int
    {
        return (($a % $n) + $n) % $n;
    }
}
