<?php

/** Prints the demo's cron_schedule rows with Forklift's facts beside them. */

declare(strict_types=1);

require dirname(__DIR__) . '/php/autoload.php';

$db = $argv[1] ?? dirname(__DIR__) . '/var/demo.sqlite';
$rows = (new Forklift\Cron\Store(fn () => new PDO("sqlite:$db")))->history(200);
$rows = array_values(array_filter($rows, fn ($r) => $r['status'] !== 'pending'));
usort($rows, fn ($a, $b) => [$a['scheduled_at'], $a['schedule_id']] <=> [$b['scheduled_at'], $b['schedule_id']]);

$table = [['ID', 'JOB_CODE', 'STATUS', 'SCHEDULED', 'EXECUTED', 'FINISHED', 'OUTCOME', 'PID', 'SECONDS', 'PEAK MEM', 'MESSAGES (first line)']];
foreach ($rows as $r) {
    $first = strtok((string) $r['messages'], "\n") ?: '';
    $table[] = [
        (string) $r['schedule_id'], $r['job_code'], $r['status'], substr((string) $r['scheduled_at'], 11),
        substr((string) $r['executed_at'], 11), substr((string) $r['finished_at'], 11), (string) $r['outcome'],
        (string) $r['pid'], $r['duration'] === null ? '' : sprintf('%.2f', $r['duration']),
        $r['peak_memory'] === null ? '' : sprintf('%.1f MB', $r['peak_memory'] / 1048576),
        mb_strimwidth($first, 0, 90, '...'),
    ];
}
$widths = [];
foreach ($table as $row) {
    foreach ($row as $i => $cell) {
        $widths[$i] = max($widths[$i] ?? 0, mb_strwidth($cell));
    }
}
foreach ($table as $row) {
    $line = '';
    foreach ($row as $i => $cell) {
        $line .= $cell . str_repeat(' ', $widths[$i] - mb_strwidth($cell) + 2);
    }
    echo rtrim($line), "\n";
}
$pending = count(array_filter((new Forklift\Cron\Store(fn () => new PDO("sqlite:$db")))->history(500), fn ($r) => $r['status'] === 'pending'));
echo "\n($pending pending rows generated ahead are not shown)\n";
