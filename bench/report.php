<?php
/*
 * Shared by bench/pool.php and bench/wait_any.php: environment knobs, the round order, and the
 * table every section prints (side, median, min-max across rounds, ratio of medians).
 * bench/run.sh prints the fork section's table in the same layout.
 */

declare(strict_types=1);

function bench_fail(string $why): never
{
    fwrite(STDERR, basename($_SERVER['SCRIPT_NAME'] ?? 'bench') . ": $why\n");
    exit(1);
}

function env_int(string $name, int $default, int $min): int
{
    $v = getenv($name);
    if ($v === false || $v === '') {
        return $default;
    }
    if (!ctype_digit($v) || (int) $v < $min) {
        fwrite(STDERR, "$name must be an integer of at least $min, '$v' given\n");
        exit(2);
    }
    return (int) $v;
}

/**
 * The order of the sides in round $round (0-based): as given in even rounds, reversed in odd
 * ones (A B, B A, A B, ...), so that no side always runs first or last.
 *
 * @template T
 * @param list<T> $sides
 * @return list<T>
 */
function round_order(array $sides, int $round): array
{
    return $round % 2 === 0 ? $sides : array_reverse($sides);
}

/** @param list<float> $xs non-empty */
function median(array $xs): float
{
    sort($xs);
    $n = count($xs);
    return $n % 2 === 1 ? $xs[intdiv($n, 2)] : ($xs[$n / 2 - 1] + $xs[$n / 2]) / 2;
}

/**
 * Prints one section's table.
 *
 * @param string $title    first line
 * @param list<array{0: string, 1: list<float>, 2: string}> $rows side, its samples (one per
 *        round), and the ratio column (text, may be '')
 * @param int $decimals    digits after the point for median, min and max
 */
function print_table(string $title, array $rows, int $decimals): void
{
    echo $title, "\n";
    printf("  %-40s %10s  %-23s %s\n", 'side', 'median', 'min-max', 'ratio of medians');
    foreach ($rows as [$side, $xs, $ratio]) {
        if ($xs === []) {
            printf("  %-40s %10s  %-23s %s\n", $side, 'n/a', 'n/a', $ratio);
            continue;
        }
        $range = sprintf('%.*f-%.*f', $decimals, min($xs), $decimals, max($xs));
        printf("  %-40s %10.*f  %-23s %s\n", $side, $decimals, median($xs), $range, $ratio);
    }
}
