<?php
/*
 * Pool throughput: tiny tasks (fn (int $x) => $x * 2) per second through Forklift\Pool and through
 * a prefork pool written by hand with pcntl: N workers forked with pcntl_fork, one
 * stream_socket_pair each; the parent sends length-prefixed serialize()d tasks, reads
 * length-prefixed serialize()d results and multiplexes with stream_select; the workers loop
 * reading tasks until EOF. The hand-written parent keeps `depth` tasks in flight per worker.
 *
 * Two pairings, each Forklift side against the raw pool at the same depth:
 *   1. Forklift\Pool at default settings (no prefetch: argument, one task per worker at a time)
 *      under a backlog (submit all tasks, then drain)   vs  raw pcntl pool, depth 1.   goal >= 2x
 *   2. Forklift\Pool with prefetch: N (same backlog)     vs  raw pcntl pool, depth N.   goal >= 1.0x
 * Same worker count and task count everywhere; workers are started and warmed up before the clock
 * starts. The four runs are interleaved in every round (order reversed every other round), and the
 * table shows per side the median and the range (min-max) across rounds and the ratio of medians.
 *
 * usage: php -d extension=target/release/libforklift.so bench/pool.php
 * env:   BENCH_ROUNDS (default 5)          BENCH_POOL_TASKS (default 10000 per run)
 *        BENCH_POOL_WORKERS (default 4)    BENCH_POOL_PREFETCH (default 8): N of pairing 2
 * Informational: speed is not asserted. Exits 1 when a run gives a wrong result, 3 when
 * Forklift\Pool or pcntl is not available.
 */

declare(strict_types=1);

require __DIR__ . '/report.php';

function fail(string $why): never
{
    bench_fail($why);
}

/**
 * @param int|null $prefetch null: the pool's default (no prefetch: argument)
 * @return float tasks per second through Forklift\Pool
 */
function run_forklift(int $workers, int $tasks, ?int $prefetch): float
{
    $pool = $prefetch === null
        ? new Forklift\Pool(fn (int $x) => $x * 2, workers: $workers, name: 'bench')
        : new Forklift\Pool(fn (int $x) => $x * 2, workers: $workers, name: 'bench', prefetch: $prefetch);
    $sum = 0;
    $done = 0;
    $bad = 0;
    $pool->onResult(function (Forklift\JobResult $r) use (&$sum, &$done, &$bad) {
        $done++;
        if ($r->ok()) {
            $sum += $r->value();
        } else {
            $bad++;
        }
    });
    // Warm up: every worker started and has run a task.
    for ($i = 0; $i < $workers * 4; $i++) {
        $pool->submit(0);
    }
    $pool->drain();
    [$sum, $done] = [0, 0];

    $start = hrtime(true);
    for ($i = 0; $i < $tasks; $i++) {
        $pool->submit($i);
    }
    $pool->drain();
    $elapsed = (hrtime(true) - $start) / 1e9;

    $pool->shutdown();
    check('forklift', $done, $bad, $sum, $tasks);
    return $tasks / $elapsed;
}

/** @return float tasks per second through the hand-written pcntl prefork pool */
function run_pcntl(int $workers, int $tasks, int $depth): float
{
    $socks = [];
    $pids = [];
    for ($w = 0; $w < $workers; $w++) {
        $pair = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
        if ($pair === false) {
            fail('stream_socket_pair failed');
        }
        $pid = pcntl_fork();
        if ($pid < 0) {
            fail('pcntl_fork failed');
        }
        if ($pid === 0) {
            fclose($pair[0]);
            foreach ($socks as $s) {
                fclose($s); // siblings' parent ends, inherited
            }
            pcntl_worker($pair[1]);
            exit(0);
        }
        fclose($pair[1]);
        stream_set_read_buffer($pair[0], 0); // so that stream_select sees every unread byte
        $socks[$w] = $pair[0];
        $pids[$w] = $pid;
    }

    // Warm up: a round trip with every worker.
    foreach ($socks as $s) {
        write_frame($s, serialize(0));
    }
    foreach ($socks as $s) {
        read_frame_blocking($s);
    }

    $start = hrtime(true);
    $next = 0;
    $done = 0;
    $sum = 0;
    $bufs = array_fill(0, $workers, '');
    $inFlight = array_fill(0, $workers, 0);
    foreach ($socks as $w => $s) {
        for ($d = 0; $d < $depth && $next < $tasks; $d++, $next++) {
            write_frame($s, serialize($next));
            $inFlight[$w]++;
        }
    }
    while ($done < $tasks) {
        $read = array_filter($socks, fn ($w) => $inFlight[$w] > 0, ARRAY_FILTER_USE_KEY);
        $write = $except = null;
        if (stream_select($read, $write, $except, null) === false) {
            fail('stream_select failed');
        }
        foreach ($read as $w => $s) {
            $chunk = fread($s, 65536);
            if ($chunk === false || $chunk === '') {
                fail("pcntl worker $w closed its socket");
            }
            $bufs[$w] .= $chunk;
            while (strlen($bufs[$w]) >= 4) {
                $len = unpack('N', $bufs[$w])[1];
                if (strlen($bufs[$w]) < 4 + $len) {
                    break;
                }
                $sum += unserialize(substr($bufs[$w], 4, $len));
                $bufs[$w] = substr($bufs[$w], 4 + $len);
                $done++;
                $inFlight[$w]--;
                if ($next < $tasks) {
                    write_frame($s, serialize($next++));
                    $inFlight[$w]++;
                }
            }
        }
    }
    $elapsed = (hrtime(true) - $start) / 1e9;

    foreach ($socks as $s) {
        fclose($s); // EOF: the worker leaves
    }
    foreach ($pids as $pid) {
        pcntl_waitpid($pid, $status);
        if (!pcntl_wifexited($status) || pcntl_wexitstatus($status) !== 0) {
            fail("pcntl worker $pid did not exit cleanly");
        }
    }
    check('pcntl', $done, 0, $sum, $tasks);
    return $tasks / $elapsed;
}

/** @param resource $sock */
function pcntl_worker($sock): void
{
    $handler = fn (int $x) => $x * 2;
    while (true) {
        $header = read_exact($sock, 4);
        if ($header === null) {
            return;
        }
        $payload = read_exact($sock, unpack('N', $header)[1]);
        if ($payload === null) {
            return;
        }
        write_frame($sock, serialize($handler(unserialize($payload))));
    }
}

/** @param resource $sock */
function write_frame($sock, string $bytes): void
{
    $frame = pack('N', strlen($bytes)) . $bytes;
    while ($frame !== '') {
        $n = fwrite($sock, $frame);
        if ($n === false || $n === 0) {
            fail('write to a socket failed');
        }
        $frame = substr($frame, $n);
    }
}

/** @param resource $sock @return string|null null at EOF */
function read_exact($sock, int $len): ?string
{
    $buf = '';
    while (strlen($buf) < $len) {
        $chunk = fread($sock, $len - strlen($buf));
        if ($chunk === false || $chunk === '') {
            return null;
        }
        $buf .= $chunk;
    }
    return $buf;
}

/** @param resource $sock */
function read_frame_blocking($sock): mixed
{
    $header = read_exact($sock, 4) ?? fail('EOF from a pcntl worker');
    return unserialize(read_exact($sock, unpack('N', $header)[1]) ?? fail('EOF from a pcntl worker'));
}

function check(string $what, int $done, int $bad, int $sum, int $tasks): void
{
    $want = $tasks * ($tasks - 1); // sum of 2x for x in 0..tasks-1
    if ($done !== $tasks || $bad !== 0 || $sum !== $want) {
        fail("$what: wrong result: $done of $tasks tasks back, $bad failed, sum $sum instead of $want");
    }
}

if (!class_exists('Forklift\Pool')) {
    fwrite(STDERR, "bench/pool.php: Forklift\\Pool is not available; run with -d extension=target/release/libforklift.so\n");
    exit(3);
}
if (!function_exists('pcntl_fork')) {
    fwrite(STDERR, "bench/pool.php: ext-pcntl is needed for the hand-written baseline\n");
    exit(3);
}

$rounds = env_int('BENCH_ROUNDS', 5, 1);
$tasks = env_int('BENCH_POOL_TASKS', 10000, 1);
$workers = env_int('BENCH_POOL_WORKERS', 4, 1);
$prefetch = env_int('BENCH_POOL_PREFETCH', 8, 1);

// Each pairing: a Forklift side (prefetch null: the default) against the raw pool at a depth.
$pairings = [
    ['fk' => 'forklift Pool, default settings', 'prefetch' => null,
        'pc' => 'raw pcntl pool, depth 1', 'depth' => 1, 'goal' => 2.0],
    ['fk' => "forklift Pool, prefetch: $prefetch", 'prefetch' => $prefetch,
        'pc' => "raw pcntl pool, depth $prefetch", 'depth' => $prefetch, 'goal' => 1.0],
];
$runs = []; // [pairing index, 'forklift'|'pcntl'], A B A B ...
foreach ($pairings as $i => $_) {
    $runs[] = [$i, 'forklift'];
    $runs[] = [$i, 'pcntl'];
}
$samples = array_fill(0, count($pairings), ['forklift' => [], 'pcntl' => []]);

for ($r = 0; $r < $rounds; $r++) {
    $line = [];
    foreach (round_order($runs, $r) as [$i, $side]) {
        $p = $pairings[$i];
        if ($side === 'forklift') {
            $perS = run_forklift($workers, $tasks, $p['prefetch']);
            $line[] = sprintf('fk-%s %.0f', $p['prefetch'] === null ? 'default' : "prefetch{$p['prefetch']}", $perS);
        } else {
            $perS = run_pcntl($workers, $tasks, $p['depth']);
            $line[] = sprintf('pcntl-depth%d %.0f', $p['depth'], $perS);
        }
        $samples[$i][$side][] = $perS;
    }
    printf("  round %d/%d (tasks/s): %s\n", $r + 1, $rounds, implode('  ', $line));
}

$rows = [];
foreach ($pairings as $i => $p) {
    $ratio = median($samples[$i]['forklift']) / median($samples[$i]['pcntl']);
    $rows[] = [$p['fk'], $samples[$i]['forklift'],
        sprintf('%.2fx vs depth %d (goal >= %.1fx: %s)', $ratio, $p['depth'], $p['goal'], $ratio >= $p['goal'] ? 'met' : 'MISSED')];
    $rows[] = [$p['pc'], $samples[$i]['pcntl'], 'baseline'];
}
print_table(
    sprintf('pool throughput: %d tiny tasks per run, %d workers, %d rounds interleaved (tasks/s, higher is better)', $tasks, $workers, $rounds),
    $rows,
    0
);
