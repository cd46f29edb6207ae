<?php
/*
 * Messenger consumer throughput (section 6 of `make bench`): tiny messages (a handler that only
 * appends one line to a file) on one Redis transport (Symfony Messenger 5.4's, from Debian) on a
 * throw-away redis-server on loopback. Four sides, each consuming the same N messages
 * (BENCH_MESSENGER_MESSAGES, 2000) that are put on the stream before its consumers start:
 *
 *   (a) bin/forklift consume APP async --limit=N --sleep=0.01            a fresh child per message
 *   (b) bin/forklift consume APP async --workers=2 --limit=N --sleep=0.01
 *   (c) the baseline: two processes each running Symfony's own Worker (what `messenger:consume`
 *       runs) with a StopWorkerOnMessageLimitListener of N/2 and sleep 10 000 us, started together,
 *       as a shop runs two `messenger:consume` under supervisord (consumer names c1, c2)
 *   (d) one such plain Worker process, limit N: the single-process cost of a message
 *   (e) bin/forklift consume APP async --prefork --workers=2 --limit=N --sleep=0.01
 *       (two long-lived workers, no fork per message)
 *
 * Per side and round: wall time from starting its process(es) to the last of them exiting (nothing
 * subtracted: PHP start-up, loading the application and shutdown are in it), as messages per
 * second; and from the handler's lines (SEQ HRTIME PID, hrtime is monotonic and the same in every
 * process) the time from the first to the last message handled, start-up and shutdown excluded,
 * as (N-1)/(last-first). A round fails (exit 1) when a consumer exits non-zero or is killed at the
 * deadline, when the handled messages are not exactly 0..N-1 once each, or when the stream is not
 * empty afterwards (XLEN 0: delete_after_ack=true; no pending entry in the group).
 *
 * Rounds: BENCH_MESSENGER_ROUNDS (3); the order of the sides rotates by one every round and is
 * reversed every other round (a b c d, a d c b, c d a b, ...). Medians and min-max across rounds;
 * ratios of medians a/c and b/c; the per-message overhead of a child per message,
 * 1/rate(a) - 1/rate(d) in ms. Then a probe (in a process that has loaded the application, as a
 * consumer has) of what (a) adds per message: a Forklift\fork() round trip, phpredis reconnecting
 * (the consumer closes its Redis connection before every fork: the next command connects again),
 * and how long Redis's XREADGROUP BLOCK 1 (ms) takes on an EMPTY stream (the transport's get()
 * blocks 1 ms; Redis handles blocking timeouts at its `hz`, 10 by default: ~100 ms).
 *
 * usage: php -d extension=target/release/libforklift.so bench/messenger.php
 *        (bench/run.sh runs it; `plain LIMIT` and `probe` are its own subprocesses)
 * env:   BENCH_MESSENGER_MESSAGES [2000]  BENCH_MESSENGER_ROUNDS [3]
 *        FORKLIFT_EXTENSION (default: the repository's target/release/libforklift.so)
 * Informational: speed is never asserted. Exits 1 when a run goes wrong, 3 when something it
 * needs is missing (the extension, pcntl/posix, phpredis, redis-server, Debian's Symfony).
 */

declare(strict_types=1);

require __DIR__ . '/report.php';

const APP = __DIR__ . '/messenger/app.php';
const STREAM = 'bench_messages';
const GROUP = 'bench';
const FORKLIFT_SLEEP = '0.01';   // --sleep of the forklift consumers, seconds
const PLAIN_SLEEP_US = 10000;    // the plain Workers' sleep, microseconds

function fail(string $why): never
{
    bench_fail($why);
}

function unavailable(string $why): never
{
    fwrite(STDERR, "bench/messenger.php: $why\n");
    exit(3);
}

function dsn(int $port, string $consumer): string
{
    return "redis://127.0.0.1:$port?" . http_build_query([
        'stream' => STREAM, 'group' => GROUP, 'consumer' => $consumer,
        'delete_after_ack' => 'true', 'delete_after_reject' => 'true',
    ]);
}

// ---------------------------------------------------------------------------------------------
// Subprocess modes.

/** (c) and (d): Symfony's own worker, as `messenger:consume async --limit=LIMIT --sleep=0.01` runs it. */
function mode_plain(int $limit): void
{
    /** @var Forklift\Messenger\App $app */
    $app = require APP;
    $app->events->addSubscriber(new Symfony\Component\Messenger\EventListener\StopWorkerOnMessageLimitListener($limit));
    $worker = new Symfony\Component\Messenger\Worker($app->receivers, $app->bus, $app->events);
    $worker->run(['sleep' => PLAIN_SLEEP_US]);
}

/** What (a) adds per message, measured in a process that has loaded the application. */
function mode_probe(): void
{
    $app = require APP;
    $port = (int) getenv('BENCH_MESSENGER_PORT');
    // A Forklift\fork() round trip at a consumer's heap (the child returns at once).
    $fork = [];
    for ($i = 0; $i < 60; $i++) {
        $t = hrtime(true);
        $r = Forklift\fork(fn () => 1)->wait();
        $fork[] = (hrtime(true) - $t) / 1e6;
        if (!$r->ok()) {
            fail("Forklift\\fork() failed in the probe: $r");
        }
    }
    // A child that dispatches the message, as (a)'s children do: first while this process has
    // never dispatched (each child loads and compiles the bus's classes again: no opcache in the
    // CLI), then after one dispatch here (the classes are in the parent, the children inherit them).
    $env = new Symfony\Component\Messenger\Envelope(new Forklift\Bench\Messenger\Tiny(-1));
    $child = function () use ($app, $env): int {
        $app->bus->dispatch($env);
        return 1;
    };
    $cold = [];
    for ($i = 0; $i < 60; $i++) {
        $t = hrtime(true);
        $r = Forklift\fork($child)->wait();
        $cold[] = (hrtime(true) - $t) / 1e6;
        if (!$r->ok()) {
            fail("Forklift\\fork() failed in the probe: $r");
        }
    }
    $app->bus->dispatch($env);
    $warm = [];
    for ($i = 0; $i < 60; $i++) {
        $t = hrtime(true);
        Forklift\fork($child)->wait();
        $warm[] = (hrtime(true) - $t) / 1e6;
    }
    // phpredis: one command on an open connection, and close() then the same command (it reconnects).
    $redis = new Redis();
    $redis->connect('127.0.0.1', $port, 5.0);
    $cmd = $reconnect = [];
    for ($i = 0; $i < 200; $i++) {
        $t = hrtime(true);
        $redis->zCount('bench_probe_queue', '0', '1');
        $cmd[] = (hrtime(true) - $t) / 1e6;
        $redis->close();
        $t = hrtime(true);
        $redis->zCount('bench_probe_queue', '0', '1');
        $reconnect[] = (hrtime(true) - $t) / 1e6;
    }
    // The transport's blocking read when the stream has nothing new: XREADGROUP ... BLOCK 1.
    $redis->xGroup('CREATE', 'bench_probe_empty', 'g', '0', true);
    $block = [];
    for ($i = 0; $i < 5; $i++) {
        $t = hrtime(true);
        $redis->xReadGroup('g', 'c', ['bench_probe_empty' => '>'], 1, 1);
        $block[] = (hrtime(true) - $t) / 1e6;
    }
    // One message handled in-process (the bus and the handler's write), as a plain Worker does it.
    $handle = [];
    for ($i = 0; $i < 200; $i++) {
        $t = hrtime(true);
        $app->bus->dispatch($env);
        $handle[] = (hrtime(true) - $t) / 1e6;
    }
    printf(
        "fork_p50_ms=%.4f fork_p90_ms=%.4f cold_p50_ms=%.4f warm_p50_ms=%.4f cmd_p50_ms=%.4f reconnect_p50_ms=%.4f block_p50_ms=%.3f handle_p50_ms=%.4f rss_kb=%d\n",
        pct($fork, 0.5), pct($fork, 0.9), pct($cold, 0.5), pct($warm, 0.5), pct($cmd, 0.5), pct($reconnect, 0.5), pct($block, 0.5), pct($handle, 0.5),
        (int) (preg_match('/VmRSS:\s+(\d+)/', (string) @file_get_contents('/proc/self/status'), $m) ? $m[1] : 0)
    );
}

/** @param list<float> $xs nearest-rank percentile, $p in (0, 1] */
function pct(array $xs, float $p): float
{
    sort($xs);
    return $xs[max(0, (int) ceil($p * count($xs)) - 1)];
}

// ---------------------------------------------------------------------------------------------
// The driver.

/** Whatever must go when this process exits, even through fail(): consumers (and their children), redis-server, the scratch dir. */
final class Leftovers
{
    /** @var array<int, resource> consumer processes by pid */
    public static array $procs = [];
    public static ?Forklift\Tests\Support\Redis $redis = null;
    public static ?string $dir = null;

    public static function cleanUp(): void
    {
        foreach (self::$procs as $pid => $proc) {
            kill_tree($pid);
            proc_close($proc);
        }
        self::$procs = [];
        self::$redis?->stop();
        self::$redis = null;
        if (self::$dir !== null) {
            Forklift\Tests\Support\DaemonKit::removeDir(self::$dir);
            self::$dir = null;
        }
    }
}

/** SIGKILLs `$pid` and every process below it (found by their parent in /proc). */
function kill_tree(int $pid): void
{
    posix_kill($pid, SIGSTOP); // no new children meanwhile
    $children = [];
    foreach (glob('/proc/[0-9]*/stat') ?: [] as $f) {
        $s = @file_get_contents($f);
        if ($s !== false && (int) explode(' ', substr($s, strrpos($s, ')') + 2))[1] === $pid) {
            $children[] = (int) basename(dirname($f));
        }
    }
    foreach ($children as $child) {
        kill_tree($child);
    }
    posix_kill($pid, SIGKILL);
}

/**
 * Starts the side's consumer processes, waits until all have exited (or the deadline), and checks
 * the round. @return array<string, float|int> wall_s, rate, ftl_rate, startup_ms, tail_ms, pids
 *
 * @param list<array{0: list<string>, 1: array<string, string>}> $commands
 */
function run_side(string $side, array $commands, int $n, string $dir, string $log, Redis $client, float $deadlineS): array
{
    $procs = [];
    $t0 = hrtime(true);
    foreach ($commands as $i => [$cmd, $env]) {
        $err = "$dir/$side-$i.err";
        @unlink($err);
        $proc = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['file', $err, 'a'], 2 => ['file', $err, 'a']], $pipes, dirname(__DIR__), $env + getenv());
        if (!is_resource($proc)) {
            fail("($side) cannot start " . implode(' ', $cmd));
        }
        $pid = proc_get_status($proc)['pid'];
        Leftovers::$procs[$pid] = $proc;
        $procs[$pid] = [$proc, $err];
    }
    $deadline = $t0 + (int) ($deadlineS * 1e9);
    $end = 0;
    $bad = [];
    while ($procs !== []) {
        foreach ($procs as $pid => [$proc, $err]) {
            $s = proc_get_status($proc);
            if ($s['running']) {
                continue;
            }
            $end = hrtime(true);
            $code = $s['signaled'] ? 128 + $s['termsig'] : $s['exitcode'];
            proc_close($proc);
            unset($procs[$pid], Leftovers::$procs[$pid]);
            if ($code !== 0) {
                $bad[] = "process $pid exited $code: " . trim((string) @file_get_contents($err));
            }
        }
        if ($procs !== [] && hrtime(true) > $deadline) {
            foreach ($procs as $pid => [$proc, $err]) {
                kill_tree($pid);
                proc_close($proc);
                unset(Leftovers::$procs[$pid]);
                $bad[] = "process $pid killed after {$deadlineS} s: " . trim((string) @file_get_contents($err));
            }
            $procs = [];
        }
        usleep(2000);
    }
    // What was handled: each of 0..N-1 once.
    $seen = [];
    $pids = [];
    $first = PHP_INT_MAX;
    $last = 0;
    $lines = 0;
    foreach (file($log, FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES) ?: [] as $line) {
        $lines++;
        if (!preg_match('/^(\d+) (\d+) (\d+)$/', $line, $m)) {
            $bad[] = "a garbled line in the handler's log: " . var_export($line, true);
            continue;
        }
        $seen[(int) $m[1]] = ($seen[(int) $m[1]] ?? 0) + 1;
        $pids[$m[3]] = true;
        $first = min($first, (int) $m[2]);
        $last = max($last, (int) $m[2]);
    }
    $twice = count(array_filter($seen, fn ($c) => $c > 1));
    $missing = 0;
    for ($i = 0; $i < $n; $i++) {
        $missing += isset($seen[$i]) ? 0 : 1;
    }
    if ($lines !== $n || $missing > 0 || $twice > 0) {
        $bad[] = "$lines messages handled of $n ($missing missing, $twice more than once)";
    }
    $len = $client->xLen(STREAM);
    $pending = $client->xPending(STREAM, GROUP);
    $pendingCount = is_array($pending) ? (int) ($pending[0] ?? 0) : -1;
    if ($len !== 0 || $pendingCount !== 0) {
        $bad[] = "the stream is not empty afterwards: XLEN $len, pending $pendingCount";
    }
    if ($bad !== []) {
        fail("($side) " . implode('; ', $bad));
    }
    $wall = ($end - $t0) / 1e9;

    return [
        'wall_s' => $wall,
        'rate' => $n / $wall,
        'ftl_rate' => $last > $first ? ($n - 1) / (($last - $first) / 1e9) : NAN,
        'startup_ms' => ($first - $t0) / 1e6,
        'tail_ms' => ($end - $last) / 1e6,
        'pids' => count($pids),
    ];
}

/** @param list<string> $sides @return list<string> rotated by $round, reversed in odd rounds */
function side_order(array $sides, int $round): array
{
    $k = $round % count($sides);
    $o = [...array_slice($sides, $k), ...array_slice($sides, 0, $k)];

    return $round % 2 === 1 ? array_reverse($o) : $o;
}

function main(): void
{
    $root = dirname(__DIR__);
    $ext = getenv('FORKLIFT_EXTENSION') ?: "$root/target/release/libforklift.so";
    if (!is_file($ext)) {
        unavailable("no extension at $ext (run: make build)");
    }
    foreach (['/usr/share/php/Symfony/Component/Messenger/autoload.php', '/usr/share/php/Symfony/Component/Console/autoload.php'] as $f) {
        if (!is_file($f)) {
            unavailable("$f is missing (Debian's php-symfony-messenger / php-symfony-console: run scripts/setup.sh)");
        }
    }
    if (!extension_loaded('redis')) {
        unavailable('the redis extension (phpredis) is not loaded: Debian\'s php8.2-redis');
    }
    if (!is_executable('/usr/bin/redis-server')) {
        unavailable('/usr/bin/redis-server is missing (Debian\'s redis-server)');
    }
    $n = env_int('BENCH_MESSENGER_MESSAGES', 2000, 2);
    $rounds = env_int('BENCH_MESSENGER_ROUNDS', 3, 1);

    require_once "$root/tests/php/Support/DaemonKit.php";
    require_once "$root/tests/php/Support/LoopbackServer.php";
    require_once "$root/tests/php/Support/Redis.php";
    Leftovers::$dir = Forklift\Tests\Support\DaemonKit::tempDir();
    $dir = Leftovers::$dir;
    $log = "$dir/handled.log";
    Leftovers::$redis = $server = new Forklift\Tests\Support\Redis();
    $port = $server->port;
    $client = $server->client();

    // The driver's own transport puts the messages on the stream (and creates the group).
    putenv('BENCH_MESSENGER_DSN=' . dsn($port, 'filler'));
    putenv("BENCH_MESSENGER_LOG=$log");
    /** @var Forklift\Messenger\App $app */
    $app = require APP;
    $sender = $app->receivers['async'];

    // Every consumer's environment: its own pid files (no other Forklift consumer of this host sees these).
    $base = ['BENCH_MESSENGER_LOG' => $log, 'FORKLIFT_RUN_DIR' => $dir, 'FORKLIFT_EXTENSION' => $ext];
    $forklift = fn (string $name, string ...$extra) => [
        [PHP_BINARY, '-d', "extension=$ext", "$root/bin/forklift", 'consume', APP, 'async', "--limit=$n", '--sleep=' . FORKLIFT_SLEEP, "--name=$name", ...$extra],
        $base + ['BENCH_MESSENGER_DSN' => dsn($port, 'consumer')],
    ];
    $plain = fn (int $limit, string $consumer) => [
        [PHP_BINARY, __FILE__, 'plain', (string) $limit],
        $base + ['BENCH_MESSENGER_DSN' => dsn($port, $consumer)],
    ];
    $sides = [
        'a' => [$forklift('bench-a')],
        'b' => [$forklift('bench-b', '--workers=2')],
        'c' => [$plain(intdiv($n + 1, 2), 'c1'), $plain(intdiv($n, 2), 'c2')],
        'd' => [$plain($n, 'd1')],
        'e' => [$forklift('bench-e', '--prefork', '--workers=2')],
    ];
    $deadline = 60.0 + $n * 0.05;

    printf("messenger: %d tiny messages per side and round on one Redis stream (redis-server %s on 127.0.0.1:%d), %d rounds\n",
        $n, $client->info('server')['redis_version'] ?? '?', $port, $rounds);
    $res = array_fill_keys(array_keys($sides), []);
    for ($r = 0; $r < $rounds; $r++) {
        $line = [];
        foreach (side_order(array_keys($sides), $r) as $side) {
            if (($len = $client->xLen(STREAM)) !== 0) {
                fail("the stream holds $len messages before side ($side) of round " . ($r + 1));
            }
            file_put_contents($log, '');
            for ($i = 0; $i < $n; $i++) {
                $sender->send(new Symfony\Component\Messenger\Envelope(new Forklift\Bench\Messenger\Tiny($i)));
            }
            if (($len = $client->xLen(STREAM)) !== $n) {
                fail("the stream holds $len messages after putting $n on it");
            }
            $o = run_side($side, $sides[$side], $n, $dir, $log, $client, $deadline);
            $res[$side][] = $o;
            $line[] = sprintf('%s %.0f/s (first->last %.0f/s, start-up %.0f ms, %d pids)', $side, $o['rate'], $o['ftl_rate'], $o['startup_ms'], $o['pids']);
        }
        printf("  round %d/%d: %s\n", $r + 1, $rounds, implode('  ', $line));
    }

    $col = fn (string $side, string $k) => array_column($res[$side], $k);
    $med = fn (string $side, string $k) => median($col($side, $k));
    $ratio = fn (string $x, string $y, string $k, string $what) => sprintf('%s = %.2f', $what, $med($x, $k) / $med($y, $k));
    $labels = [
        'a' => '(a) forklift consume (child per message)',
        'b' => '(b) forklift consume --workers=2',
        'c' => '(c) 2 x plain Worker, N/2 each',
        'd' => '(d) 1 x plain Worker',
        'e' => '(e) forklift consume --prefork -w 2',
    ];
    $table = function (string $title, string $k, int $decimals) use ($labels, $col, $ratio) {
        print_table($title, [
            [$labels['a'], $col('a', $k), $ratio('a', 'c', $k, 'a/c')],
            [$labels['b'], $col('b', $k), $ratio('b', 'c', $k, 'b/c')],
            [$labels['c'], $col('c', $k), 'baseline'],
            [$labels['d'], $col('d', $k), $ratio('d', 'c', $k, 'd/c')],
            [$labels['e'], $col('e', $k), $ratio('e', 'c', $k, 'e/c')],
        ], $decimals);
    };
    echo "\n";
    $table(sprintf('Messenger throughput, %d tiny messages on Redis: msgs/s from the start of the consumer(s) to the last one exited (higher is better)', $n), 'rate', 0);
    $table('the same rounds, first -> last message handled (start-up and shutdown left out): msgs/s', 'ftl_rate', 0);
    print_table('start-up: the consumer(s) started -> the first message handled (ms)', array_map(
        fn ($s) => [$labels[$s], $col($s, 'startup_ms'), ''], array_keys($labels)
    ), 0);
    print_table('shutdown: the last message handled -> the last consumer process exited (ms)', array_map(
        fn ($s) => [$labels[$s], $col($s, 'tail_ms'), ''], array_keys($labels)
    ), 0);
    printf(
        "  per-message overhead of a child per message, 1/rate(a) - 1/rate(d): %.3f ms (wall), %.3f ms (first -> last)\n",
        1e3 / $med('a', 'rate') - 1e3 / $med('d', 'rate'), 1e3 / $med('a', 'ftl_rate') - 1e3 / $med('d', 'ftl_rate')
    );
    printf("  (ms per message, medians: a %.3f, b %.3f, c %.3f, d %.3f, e %.3f first -> last)\n",
        1e3 / $med('a', 'ftl_rate'), 1e3 / $med('b', 'ftl_rate'), 1e3 / $med('c', 'ftl_rate'), 1e3 / $med('d', 'ftl_rate'), 1e3 / $med('e', 'ftl_rate'));

    // Where (a)'s time per message goes: measured apart, in a process like a consumer.
    $err = "$dir/probe.err";
    $p = proc_open([PHP_BINARY, '-d', "extension=$ext", __FILE__, 'probe'], [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['file', $err, 'w']], $pipes, $root,
        $base + ['BENCH_MESSENGER_DSN' => dsn($port, 'probe'), 'BENCH_MESSENGER_LOG' => "$dir/probe.log", 'BENCH_MESSENGER_PORT' => (string) $port] + getenv());
    $pid = proc_get_status($p)['pid'];
    Leftovers::$procs[$pid] = $p;
    $out = stream_get_contents($pipes[1]);
    fclose($pipes[1]);
    $code = proc_close($p);
    unset(Leftovers::$procs[$pid]);
    if ($code !== 0 || !preg_match_all('/(\w+)=(\S+)/', (string) $out, $m)) {
        fail("the probe exited $code: " . trim((string) @file_get_contents($err)) . " $out");
    }
    $o = array_combine($m[1], $m[2]);
    printf(
        "  probe, in a process that has loaded the application (rss %d MB), p50 ms: Forklift\\fork() round trip %.3f (p90 %.3f);\n"
        . "    a child that dispatches the message %.3f while the parent has never dispatched (each child autoloads and\n"
        . "    compiles the bus's classes: opcache is off in the CLI), %.3f after one dispatch in the parent;\n"
        . "    in-process dispatch + handler %.3f; a phpredis command %.3f, the same after close() (reconnect) %.3f;\n"
        . "    XREADGROUP BLOCK 1 on an empty stream %.1f (Redis times blocked reads out at its hz; not hit above: the stream is filled first)\n",
        (int) $o['rss_kb'] / 1024, $o['fork_p50_ms'], $o['fork_p90_ms'], $o['cold_p50_ms'], $o['warm_p50_ms'],
        $o['handle_p50_ms'], $o['cmd_p50_ms'], $o['reconnect_p50_ms'], $o['block_p50_ms']
    );
}

// ---------------------------------------------------------------------------------------------

if (!function_exists('pcntl_signal') || !function_exists('posix_kill')) {
    unavailable('ext-pcntl and ext-posix are needed');
}
$mode = $argv[1] ?? 'all';
if ($mode === 'all') {
    if (!function_exists('Forklift\fork')) {
        unavailable('Forklift is not loaded; run with -d extension=target/release/libforklift.so');
    }
    register_shutdown_function([Leftovers::class, 'cleanUp']);
    pcntl_async_signals(true);
    foreach ([SIGINT, SIGTERM, SIGHUP] as $sig) {
        pcntl_signal($sig, fn () => fail('interrupted'));
    }
}
match ($mode) {
    'all' => main(),
    'plain' => mode_plain((int) ($argv[2] ?? 0)),
    'probe' => mode_probe(),
    default => fail("unknown mode $mode (all, plain LIMIT, probe)"),
};
