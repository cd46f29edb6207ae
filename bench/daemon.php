<?php
/*
 * Daemon benchmarks (Forklift\Daemon, bin/forklift run). Every side runs in a process of its own;
 * sides are interleaved round by round (A B, then B A, ...) for BENCH_DAEMON_ROUNDS rounds, and
 * each table shows per side the median and the range (min-max) across rounds and a ratio of
 * medians against the peer.
 *
 *   1. timer drift: Daemon::every(0.001, $cb) run in-process (run()) up to grid tick N (10 000);
 *      drift = (when the callback of tick N ran) - (the daemon's start + N x 1 ms), the start being
 *      when the dispatcher logs "started" (right after its timers are armed). A tick the loop wakes
 *      too late for is skipped (missed: "skip", the default); the logger counts those, so that the
 *      callback knows which grid tick it runs for. Peer: the usual PHP loop
 *      `while (...) { usleep(1000); work(); }`, whose tick k is due at start + k x 1 ms. goal < 1 ms.
 *   2. CPU of the supervisor and the dispatcher while 1 000 jobs sleep: `bin/forklift run
 *      bench/daemon_app.php` starts 1 000 parallel runs that sleep; once the dispatcher says they
 *      have all started (a line on a pipe) and the status socket shows them running, the CPU time
 *      of both processes is read from /proc over a fixed 2 s window: /proc/PID/task/T/schedstat
 *      (nanoseconds) when the kernel has it, /proc/PID/stat utime+stime (clock ticks) too.
 *      Peer: a hand-written pcntl dispatcher that forks 1 000 sleeping children and loops on
 *      pcntl_waitpid(-1, $s, WNOHANG) + usleep(10000). goal ~0 (no polling).
 *   3. status query latency with those 1 000 runs running (the daemon of 2, after the window):
 *      BENCH_DAEMON_QUERIES (200) x Forklift\Daemon::query($pidFile, 'status'); p50 and p99. Then
 *      `bin/forklift stop --pid-file=P` (timed too).
 *   4. job start latency: Daemon::every(0.05, fn () => hrtime(true), fork: true) run in-process; each
 *      run's first statement reads the clock (hrtime: monotonic, the same in every process);
 *      latency = that - its due time on the tick grid (the daemon's start + k x 50 ms, k from the
 *      run's scheduledAt(), which for an every() run is when the loop fired the tick, not when it
 *      was due: the difference is shown as "waking up"). BENCH_DAEMON_STARTS (200)
 *      samples, p50 / p99 / max. Peer: Forklift\fork(fn () => hrtime(true)) called by a plain loop
 *      that usleep()s to the same grid (the dispatcher's overhead over a bare fork).
 *
 * usage: php -d extension=target/release/libforklift.so bench/daemon.php
 *        (bench/run.sh runs it; the modes below are its own subprocesses)
 * env:   BENCH_DAEMON_ROUNDS [3]  BENCH_DAEMON_TICKS [10000]  BENCH_DAEMON_JOBS [1000]
 *        BENCH_DAEMON_QUERIES [200]  BENCH_DAEMON_STARTS [200]
 *        FORKLIFT_EXTENSION (default: the repository's target/release/libforklift.so)
 * Informational: speed is never asserted. Exits 1 when a run goes wrong (a crash, a daemon that
 * does not come up, a wrong count), 3 when Forklift\Daemon or pcntl/posix is not available.
 */

declare(strict_types=1);

require __DIR__ . '/report.php';

const TICK = 0.001;         // section 1
const START_EVERY = 0.05;   // section 4
const CPU_WINDOW = 2.0;     // section 2, seconds
const DRIFT_GOAL_MS = 1.0;
const UP_TIMEOUT = 120.0;   // seconds a daemon may take to start its runs before the run fails

function fail(string $why): never
{
    bench_fail($why);
}

/** A PSR-3 logger (duck-typed: the daemon calls log()) that the benchmark reads instead of stderr. */
final class BenchLogger
{
    /** hrtime(true) when the dispatcher said "started": its timers were armed just before. */
    public ?int $startedAt = null;
    /** microtime(true) at the same moment. */
    public ?float $startedWall = null;
    /** Grid ticks an interval timer lost to late wake-ups: the missed ones, and (with missed: "skip") the due one. */
    public int $lostTicks = 0;
    public int $lateWakeups = 0;
    /** @var list<string> warnings and worse, other than late wake-ups */
    public array $problems = [];

    public function log(mixed $level, string|\Stringable $message, array $context = []): void
    {
        $now = hrtime(true);
        $message = (string) $message;
        if ($this->startedAt === null && str_starts_with($message, 'started')) {
            $this->startedAt = $now;
            $this->startedWall = microtime(true);
        } elseif (preg_match('/: (\d+) scheduled time\(s\) passed without a run/', $message, $m)) {
            $this->lostTicks += (int) $m[1] + 1; // with "skip" the tick due at the late wake-up is skipped too
            $this->lateWakeups++;
        } elseif (in_array($level, ['warning', 'error', 'critical', 'alert', 'emergency'], true)) {
            $this->problems[] = "$level: $message";
        }
    }
}

/**
 * What is left to clean up when this process exits, even through fail() (exit() skips finally
 * blocks; shutdown functions run): subprocesses still running, scratch directories.
 */
final class Leftovers
{
    /** @var array<int, Sub> */
    public static array $subs = [];
    /** @var array<string, true> */
    public static array $dirs = [];

    public static function cleanUp(): void
    {
        foreach (self::$subs as $sub) {
            $sub->kill();
        }
        foreach (array_keys(self::$dirs) as $dir) {
            remove_dir($dir);
        }
    }
}

/** A scratch directory for pid files and sockets (short path: a socket path has ~100 bytes). */
function temp_dir(string $tag): string
{
    $base = rtrim(sys_get_temp_dir(), '/');
    for ($i = 0; $i < 100; $i++) {
        $dir = sprintf('%s/fl-bench-%s-%d-%s', $base, $tag, getmypid(), bin2hex(random_bytes(3)));
        if (@mkdir($dir, 0700)) {
            Leftovers::$dirs[$dir] = true;
            return $dir;
        }
    }
    fail("cannot create a temporary directory in $base");
}

function remove_dir(string $dir): void
{
    unset(Leftovers::$dirs[$dir]);
    if (!is_dir($dir)) {
        return;
    }
    foreach (scandir($dir) as $f) {
        if ($f !== '.' && $f !== '..') {
            @unlink("$dir/$f");
        }
    }
    @rmdir($dir);
}

/** @param list<float> $xs  nearest-rank percentile, $p in (0, 1] */
function pct(array $xs, float $p): float
{
    sort($xs);
    return $xs[max(0, (int) ceil($p * count($xs)) - 1)];
}

// ---------------------------------------------------------------------------------------------
// Subprocess modes: each prints one line of key=value pairs on stdout.

/** Section 1, ours. */
function mode_drift_daemon(int $ticks, string $dir): void
{
    $log = new BenchLogger();
    $d = new Forklift\Daemon('bench-drift', pidFile: "$dir/drift.pid", logger: $log);
    $calls = 0;
    $tick = 0;
    $at = 0;
    $d->every(TICK, function () use ($d, $log, $ticks, &$calls, &$tick, &$at) {
        $now = hrtime(true);
        $calls++;
        // The grid tick this call is for: every call so far, plus the ticks lost to late wake-ups.
        $tick = $calls + $log->lostTicks;
        if ($tick >= $ticks) {
            $at = $now;
            $d->stop();
        }
    });
    $code = $d->run();
    if ($code !== 0 || $at === 0 || $log->startedAt === null) {
        fail("the daemon's run() returned $code after $calls calls (tick $tick)" . ($log->problems ? ': ' . implode('; ', $log->problems) : ''));
    }
    $overruns = $d->status()['timer_overruns'] ?? null;
    $drift = ($at - $log->startedAt) / 1e6 - $tick * TICK * 1e3;
    printf(
        "drift_ms=%.4f tick=%d calls=%d lost=%d late_wakeups=%d overruns=%s problems=%d\n",
        $drift, $tick, $calls, $log->lostTicks, $log->lateWakeups, var_export($overruns, true), count($log->problems)
    );
}

/** Section 1, peer: sleep an interval after each piece of work. */
function mode_drift_loop(int $ticks): void
{
    $calls = 0;
    $at = 0;
    $work = function () use (&$calls, &$at) { // what the daemon's callback does
        $at = hrtime(true);
        $calls++;
    };
    $start = hrtime(true);
    while ($calls < $ticks) {
        usleep(1000);
        $work();
    }
    printf("drift_ms=%.4f tick=%d calls=%d\n", ($at - $start) / 1e6 - $ticks * TICK * 1e3, $calls, $calls);
}

/** Section 4, ours. */
function mode_latency_daemon(int $samples, string $dir): void
{
    $log = new BenchLogger();
    $d = new Forklift\Daemon('bench-start', pidFile: "$dir/start.pid", logger: $log, stopTimeout: 5.0);
    $d->every(START_EVERY, fn () => hrtime(true), name: 'tick', fork: true);
    $runs = [];
    $bad = [];
    $d->onJobEnd(function (Forklift\JobRun $run) use ($d, $samples, &$runs, &$bad) {
        $r = $run->result();
        if ($r === null || !$r->ok()) {
            $bad[] = (string) $r;
        } else {
            $runs[] = [$run->scheduledAt(), $r->value()];
        }
        if (count($runs) + count($bad) >= $samples) {
            $d->stop();
        }
    });
    $code = $d->run();
    if ($code !== 0 || $bad !== [] || $log->startedAt === null) {
        fail("the daemon's run() returned $code; failed runs: " . implode('; ', array_slice($bad, 0, 3)));
    }
    // The grid: the daemon's start (monotonic) + k x 50 ms. k comes from scheduledAt() (wall clock,
    // when the loop fired the tick); the wall clock at the start is read off the same logger call.
    $lat = [];
    $wake = [];
    $startWall = $log->startedWall;
    foreach ($runs as [$scheduledAt, $firstLine]) {
        $k = (int) round(($scheduledAt - $startWall) / START_EVERY);
        $due = $log->startedAt + (int) round($k * START_EVERY * 1e9);
        $lat[] = ($firstLine - $due) / 1e6;
        $wake[] = ($scheduledAt - ($startWall + $k * START_EVERY)) * 1e3;
    }
    printf(
        "p50_ms=%.4f p99_ms=%.4f max_ms=%.4f wake_p50_ms=%.4f wake_p99_ms=%.4f n=%d lost=%d\n",
        pct($lat, 0.5), pct($lat, 0.99), max($lat), pct($wake, 0.5), pct($wake, 0.99), count($lat), $log->lostTicks
    );
}

/** Section 4, peer: a bare Forklift\fork() at the same grid. */
function mode_latency_fork(int $samples): void
{
    $lat = [];
    $wake = [];
    $start = hrtime(true);
    for ($k = 1; $k <= $samples; $k++) {
        $due = $start + (int) round($k * START_EVERY * 1e9);
        $wait = $due - hrtime(true);
        if ($wait > 0) {
            usleep(intdiv($wait, 1000));
        }
        $wake[] = (hrtime(true) - $due) / 1e6;
        $r = Forklift\fork(fn () => hrtime(true))->wait();
        if (!$r->ok()) {
            fail("Forklift\\fork() run $k failed: $r");
        }
        $lat[] = ($r->value() - $due) / 1e6;
    }
    printf(
        "p50_ms=%.4f p99_ms=%.4f max_ms=%.4f wake_p50_ms=%.4f wake_p99_ms=%.4f n=%d\n",
        pct($lat, 0.5), pct($lat, 0.99), max($lat), pct($wake, 0.5), pct($wake, 0.99), count($lat)
    );
}

/** Section 2, peer: what supervisord-like PHP scripts do. Prints "ready" once every child is forked. */
function mode_pcntl_dispatcher(int $jobs, int $sleep): void
{
    posix_setpgid(0, 0); // one process group with its children: the benchmark can always clean up
    pcntl_async_signals(true);
    $stop = false;
    pcntl_signal(SIGTERM, function () use (&$stop) {
        $stop = true;
    });
    $children = [];
    for ($i = 0; $i < $jobs; $i++) {
        $pid = pcntl_fork();
        if ($pid < 0) {
            fail("pcntl_fork failed at child $i");
        }
        if ($pid === 0) {
            pcntl_signal(SIGTERM, SIG_DFL);
            sleep($sleep);
            exit(0);
        }
        $children[$pid] = true;
    }
    fwrite(STDOUT, 'ready ' . getmypid() . "\n");
    while (!$stop && $children !== []) {
        while (($pid = pcntl_waitpid(-1, $status, WNOHANG)) > 0) {
            unset($children[$pid]);
        }
        usleep(10000);
    }
    foreach (array_keys($children) as $pid) {
        posix_kill($pid, SIGTERM);
    }
    while ($children !== [] && ($pid = pcntl_waitpid(-1, $status)) > 0) {
        unset($children[$pid]);
    }
}

// ---------------------------------------------------------------------------------------------
// The driver.

final class Sub
{
    /** @var resource */
    public $proc;
    /** @var resource */
    public $out;
    public int $pid;
    public bool $done = false;

    /**
     * @param list<string> $cmd
     * @param array<string, string> $env extra environment
     * @param bool $ownGroup it makes itself a process group leader: kill() ends the whole group
     */
    public function __construct(array $cmd, public string $errFile, array $env = [], public bool $ownGroup = false)
    {
        $proc = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['file', $errFile, 'a']], $pipes, null, $env + getenv());
        if (!is_resource($proc)) {
            fail('cannot start ' . implode(' ', $cmd));
        }
        $this->proc = $proc;
        $this->out = $pipes[1];
        $this->pid = proc_get_status($proc)['pid'];
        Leftovers::$subs[$this->pid] = $this;
    }

    /** Ends it (SIGKILL) and reaps it: a supervisor takes its dispatcher and runs with it. */
    public function kill(): void
    {
        if ($this->done) {
            return;
        }
        if ($this->ownGroup) {
            posix_kill(-$this->pid, SIGKILL);
        }
        proc_terminate($this->proc, SIGKILL);
        $this->close();
    }

    /** The next line on its stdout, waiting at most $timeout seconds; null at EOF or timeout. */
    public function line(float $timeout): ?string
    {
        $deadline = microtime(true) + $timeout;
        $buf = '';
        while (true) {
            $left = $deadline - microtime(true);
            if ($left <= 0) {
                return null;
            }
            $r = [$this->out];
            $w = $e = null;
            if (@stream_select($r, $w, $e, (int) $left, (int) (fmod($left, 1.0) * 1e6)) === 0) {
                return null;
            }
            $c = fgets($this->out);
            if ($c === false) {
                return feof($this->out) ? null : $buf;
            }
            $buf .= $c;
            if (str_ends_with($buf, "\n")) {
                return rtrim($buf, "\n");
            }
        }
    }

    /** Waits for it to exit; its exit code. */
    public function close(): int
    {
        fclose($this->out);
        $this->done = true;
        unset(Leftovers::$subs[$this->pid]);
        return proc_close($this->proc);
    }

    public function err(): string
    {
        return trim((string) @file_get_contents($this->errFile));
    }
}

/** Runs `php [-d extension=...] bench/daemon.php MODE ...` to its end; its output line as key => value. */
function run_mode(string $ext, string $dir, string ...$args): array
{
    $err = "$dir/mode.err";
    @unlink($err);
    $p = new Sub([PHP_BINARY, '-d', "extension=$ext", __FILE__, ...$args], $err);
    $out = stream_get_contents($p->out);
    $code = $p->close();
    if ($code !== 0 || !preg_match_all('/(\w+)=(\S+)/', (string) $out, $m)) {
        fail(sprintf("mode %s exited %d: %s%s", implode(' ', $args), $code, $p->err(), $out ? " stdout: $out" : ''));
    }
    return array_combine($m[1], $m[2]);
}

/** CPU time of a process (all its threads), as [nanoseconds from schedstat or null, clock ticks from stat]. */
function cpu_of(int $pid): array
{
    $stat = @file_get_contents("/proc/$pid/stat");
    if ($stat === false) {
        fail("process $pid is gone (/proc/$pid/stat)");
    }
    $f = explode(' ', substr($stat, strrpos($stat, ')') + 2));
    $ticks = (int) $f[11] + (int) $f[12]; // utime, stime: fields 14 and 15
    $files = glob("/proc/$pid/task/*/schedstat") ?: [];
    $ns = $files === [] ? null : 0;
    foreach ($files as $file) {
        $s = @file_get_contents($file);
        if ($s === false) {
            return [null, $ticks]; // a thread came or went: use the ticks for this window
        }
        $ns += (int) explode(' ', $s)[0];
    }
    return [$ns, $ticks];
}

/**
 * CPU of the processes over the fixed window: [ms of CPU per s (schedstat, else stat), clock ticks
 * per s (stat)] per pid.
 *
 * @param list<int> $pids
 * @return array<int, array{0: float, 1: float}>
 */
function cpu_window(array $pids): array
{
    $hz = 100; // USER_HZ: /proc/PID/stat counts in 1/100 s on Linux whatever the kernel's HZ
    $before = [];
    foreach ($pids as $pid) {
        $before[$pid] = cpu_of($pid);
    }
    $t0 = hrtime(true);
    usleep((int) (CPU_WINDOW * 1e6)); // the one fixed sleep: the measuring window itself
    $after = [];
    foreach ($pids as $pid) {
        $after[$pid] = cpu_of($pid);
    }
    $secs = (hrtime(true) - $t0) / 1e9;
    $out = [];
    foreach ($pids as $pid) {
        $ticks = ($after[$pid][1] - $before[$pid][1]) / $secs;
        $ms = $before[$pid][0] !== null && $after[$pid][0] !== null
            ? ($after[$pid][0] - $before[$pid][0]) / 1e6 / $secs
            : $ticks * 1000 / $hz;
        $out[$pid] = [$ms, $ticks];
    }
    return $out;
}

function status_of(string $pidFile): array
{
    return json_decode(Forklift\Daemon::query($pidFile, 'status'), true, 512, JSON_THROW_ON_ERROR);
}

/**
 * Sections 2 and 3, ours: bin/forklift run bench/daemon_app.php with $jobs sleeping runs.
 *
 * @return array{cpu_sup: float, cpu_disp: float, ticks: float, p50: float, p99: float, up_s: float, stop_s: float}
 */
function round_daemon(string $ext, string $root, int $jobs, int $queries): array
{
    $dir = temp_dir('sleepers');
    $pidFile = "$dir/sleepers.pid";
    $sup = null;
    try {
        $t0 = hrtime(true);
        $sup = new Sub(
            [PHP_BINARY, '-d', "extension=$ext", "$root/bin/forklift", 'run', "$root/bench/daemon_app.php"],
            "$dir/daemon.log",
            ['BENCH_DAEMON_PID_FILE' => $pidFile, 'BENCH_DAEMON_JOBS' => (string) $jobs, 'FORKLIFT_EXTENSION' => $ext],
        );
        $line = $sup->line(UP_TIMEOUT);
        if ($line === null || !preg_match('/^all-started (\d+)$/', $line, $m)) {
            fail("the daemon did not start its $jobs runs within " . UP_TIMEOUT . " s; its log:\n" . $sup->err());
        }
        $up = (hrtime(true) - $t0) / 1e9;
        // The status socket must agree: every run running (polled, in case it lags the event).
        $deadline = microtime(true) + 10;
        while (count(($s = status_of($pidFile))['running']) !== $jobs) {
            if (microtime(true) > $deadline) {
                fail(sprintf('status shows %d runs running, not %d', count($s['running']), $jobs));
            }
            usleep(20000);
        }
        if ($s['dispatcher'] !== (int) $m[1] || $s['supervisor'] !== $sup->pid) {
            fail("status names supervisor {$s['supervisor']} / dispatcher {$s['dispatcher']}, not {$sup->pid} / {$m[1]}");
        }
        $cpu = cpu_window([$sup->pid, $s['dispatcher']]);
        // Section 3: the same daemon, the same 1 000 runs.
        $ms = [];
        $json = '';
        for ($i = 0; $i < $queries; $i++) {
            $q0 = hrtime(true);
            $json = Forklift\Daemon::query($pidFile, 'status');
            $ms[] = (hrtime(true) - $q0) / 1e6;
        }
        $running = count(json_decode($json, true, 512, JSON_THROW_ON_ERROR)['running']);
        if ($running !== $jobs) {
            fail("after the queries, status shows $running runs running, not $jobs");
        }
        $s0 = hrtime(true);
        $stop = new Sub([PHP_BINARY, '-d', "extension=$ext", "$root/bin/forklift", 'stop', "--pid-file=$pidFile", '--timeout=60'], "$dir/stop.err");
        stream_get_contents($stop->out);
        if (($code = $stop->close()) !== 0) {
            fail("bin/forklift stop exited $code: " . $stop->err());
        }
        $stopS = (hrtime(true) - $s0) / 1e9;
        if (($code = $sup->close()) !== 0) {
            fail("the supervisor exited $code after stop; its log:\n" . $sup->err());
        }
        return [
            'cpu_sup' => $cpu[$sup->pid][0], 'cpu_disp' => $cpu[$s['dispatcher']][0],
            'ticks' => $cpu[$sup->pid][1] + $cpu[$s['dispatcher']][1],
            'p50' => pct($ms, 0.5), 'p99' => pct($ms, 0.99), 'up_s' => $up, 'stop_s' => $stopS,
        ];
    } finally {
        $sup?->kill(); // after a failure: the dispatcher and its runs die with the supervisor
        remove_dir($dir);
    }
}

/** Section 2, peer. @return array{cpu: float, ticks: float, up_s: float} */
function round_pcntl(string $ext, int $jobs): array
{
    $dir = temp_dir('pcntl');
    $p = null;
    try {
        $t0 = hrtime(true);
        $p = new Sub([PHP_BINARY, '-d', "extension=$ext", __FILE__, 'pcntl-dispatcher', (string) $jobs, '60'], "$dir/pcntl.err", [], true);
        $line = $p->line(UP_TIMEOUT);
        if ($line !== "ready {$p->pid}") {
            fail("the pcntl dispatcher did not fork its $jobs children: " . var_export($line, true) . ' ' . $p->err());
        }
        $up = (hrtime(true) - $t0) / 1e9;
        $cpu = cpu_window([$p->pid]);
        posix_kill($p->pid, SIGTERM);
        if (($code = $p->close()) !== 0) {
            fail("the pcntl dispatcher exited $code: " . $p->err());
        }
        return ['cpu' => $cpu[$p->pid][0], 'ticks' => $cpu[$p->pid][1], 'up_s' => $up];
    } finally {
        $p?->kill(); // after a failure: its process group, it and its children
        remove_dir($dir);
    }
}

function ratio_text(float $a, float $b, string $what): string
{
    return $b == 0.0 ? "$what: n/a (peer 0)" : sprintf('%s = %.3g', $what, $a / $b);
}

function main(): void
{
    $root = dirname(__DIR__);
    $ext = getenv('FORKLIFT_EXTENSION') ?: "$root/target/release/libforklift.so";
    if (!is_file($ext)) {
        fwrite(STDERR, "bench/daemon.php: no extension at $ext (run: make build)\n");
        exit(3);
    }
    $rounds = env_int('BENCH_DAEMON_ROUNDS', 3, 1);
    $ticks = env_int('BENCH_DAEMON_TICKS', 10000, 2);
    $jobs = env_int('BENCH_DAEMON_JOBS', 1000, 1);
    $queries = env_int('BENCH_DAEMON_QUERIES', 200, 1);
    $starts = env_int('BENCH_DAEMON_STARTS', 200, 1);
    $dir = temp_dir('daemon');

    // 1. timer drift
    printf("1. timer drift: every(0.001) up to tick %d, in-process run() vs a usleep(1000) loop\n", $ticks);
    $dr = ['daemon' => [], 'loop' => []];
    $lost = [];
    for ($r = 0; $r < $rounds; $r++) {
        $line = [];
        foreach (round_order(['daemon', 'loop'], $r) as $side) {
            $o = $side === 'daemon'
                ? run_mode($ext, $dir, 'drift-daemon', (string) $ticks, $dir)
                : run_mode($ext, $dir, 'drift-loop', (string) $ticks);
            $dr[$side][] = (float) $o['drift_ms'];
            if ($side === 'daemon') {
                $lost[] = "{$o['lost']} ticks lost in {$o['late_wakeups']} late wake-ups";
            }
            $line[] = sprintf('%s %.3f', $side, $o['drift_ms']);
        }
        printf("  round %d/%d (drift ms): %s\n", $r + 1, $rounds, implode('  ', $line));
    }
    $m = median($dr['daemon']);
    print_table(
        sprintf('timer drift at tick %d of a 1 ms timer (ms past start + %d x 1 ms; lower is better)', $ticks, $ticks),
        [
            ['(a) Daemon::every(0.001)', $dr['daemon'], sprintf('goal < %g ms: %s', DRIFT_GOAL_MS, abs($m) < DRIFT_GOAL_MS ? 'met' : 'MISSED')],
            ['(b) while { usleep(1000); work(); }', $dr['loop'], ratio_text(median($dr['loop']), $m, 'b/a') . ' (how much more b drifts)'],
        ],
        3
    );
    echo '  (a) skipped ticks (loop woke > 1 ms late; missed: "skip"): ', implode(', ', $lost), "\n";

    // 2 and 3. 1 000 sleeping runs
    printf("\n2./3. %d sleeping jobs: CPU over a %.0f s window, then %d status queries; bin/forklift run vs a pcntl WNOHANG loop\n", $jobs, CPU_WINDOW, $queries);
    $cpu = ['sup' => [], 'disp' => [], 'sum' => [], 'pcntl' => []];
    $ticksA = $ticksB = [];
    $p50 = $p99 = $up = $upB = $stop = [];
    for ($r = 0; $r < $rounds; $r++) {
        $line = [];
        foreach (round_order(['daemon', 'pcntl'], $r) as $side) {
            if ($side === 'daemon') {
                $o = round_daemon($ext, $root, $jobs, $queries);
                $cpu['sup'][] = $o['cpu_sup'];
                $cpu['disp'][] = $o['cpu_disp'];
                $cpu['sum'][] = $o['cpu_sup'] + $o['cpu_disp'];
                $ticksA[] = $o['ticks'];
                $p50[] = $o['p50'];
                $p99[] = $o['p99'];
                $up[] = $o['up_s'];
                $stop[] = $o['stop_s'];
                $line[] = sprintf('forklift %.3f ms/s (query p99 %.2f ms, up %.2f s, stop %.2f s)', $o['cpu_sup'] + $o['cpu_disp'], $o['p99'], $o['up_s'], $o['stop_s']);
            } else {
                $o = round_pcntl($ext, $jobs);
                $cpu['pcntl'][] = $o['cpu'];
                $ticksB[] = $o['ticks'];
                $upB[] = $o['up_s'];
                $line[] = sprintf('pcntl %.3f ms/s (up %.2f s)', $o['cpu'], $o['up_s']);
            }
        }
        printf("  round %d/%d: %s\n", $r + 1, $rounds, implode('  ', $line));
    }
    $a = median($cpu['sum']);
    $b = median($cpu['pcntl']);
    print_table(
        sprintf('CPU while %d jobs sleep (ms of CPU per s = CPU-s/s x 1000, over %.0f s; lower is better)', $jobs, CPU_WINDOW),
        [
            ['(a) forklift supervisor + dispatcher', $cpu['sum'], ratio_text($a, $b, 'a/b') . sprintf(' (goal ~0, taken as < 1 ms/s: %s)', $a < 1.0 ? 'met' : 'MISSED')],
            ['    of which the supervisor', $cpu['sup'], ''],
            ['    of which the dispatcher', $cpu['disp'], ''],
            ['(b) pcntl: waitpid(WNOHANG)+usleep(10ms)', $cpu['pcntl'], 'baseline'],
        ],
        3
    );
    printf(
        "  /proc/PID/stat utime+stime over the windows (1/100 s ticks per s, median): a %.2f, b %.2f\n",
        median($ticksA), median($ticksB)
    );
    printf(
        "  time to have all %d running (from the command to the event): a %.2f s (bin/forklift run), b %.2f s; bin/forklift stop: %.2f s (median)\n",
        $jobs, median($up), median($upB), median($stop)
    );
    print_table(
        sprintf('status query with %d jobs running: %d x Daemon::query(status) per round (ms; no peer)', $jobs, $queries),
        [
            ['p50', $p50, ''],
            ['p99', $p99, ''],
        ],
        2
    );

    // 4. job start latency
    printf("\n4. job start latency: %d runs, one per %.0f ms tick, due time -> the job's first line\n", $starts, START_EVERY * 1e3);
    $lat = ['daemon' => ['p50' => [], 'p99' => [], 'max' => []], 'fork' => ['p50' => [], 'p99' => [], 'max' => []]];
    $wake = ['daemon' => [], 'fork' => []];
    for ($r = 0; $r < $rounds; $r++) {
        $line = [];
        foreach (round_order(['daemon', 'fork'], $r) as $side) {
            $o = $side === 'daemon'
                ? run_mode($ext, $dir, 'latency-daemon', (string) $starts, $dir)
                : run_mode($ext, $dir, 'latency-fork', (string) $starts);
            foreach (['p50', 'p99', 'max'] as $k) {
                $lat[$side][$k][] = (float) $o["{$k}_ms"];
            }
            $wake[$side][] = (float) $o['wake_p99_ms'];
            $line[] = sprintf('%s p50 %.3f p99 %.3f', $side, $o['p50_ms'], $o['p99_ms']);
        }
        printf("  round %d/%d (ms): %s\n", $r + 1, $rounds, implode('  ', $line));
    }
    print_table(
        sprintf('job start latency, due time -> first line of the job (ms, %d samples per round; lower is better)', $starts),
        [
            ['(a) every(0.05, fork: true) p50', $lat['daemon']['p50'], ratio_text(median($lat['daemon']['p50']), median($lat['fork']['p50']), 'a/b')],
            ['(a) every(0.05, fork: true) p99', $lat['daemon']['p99'], ratio_text(median($lat['daemon']['p99']), median($lat['fork']['p99']), 'a/b')],
            ['(b) usleep to the grid + fork() p50', $lat['fork']['p50'], 'baseline'],
            ['(b) usleep to the grid + fork() p99', $lat['fork']['p99'], 'baseline'],
        ],
        3
    );
    printf(
        "  max (median over rounds): a %.3f ms, b %.3f ms; of which waking up (due -> the loop fires the tick /\n"
        . "  fork() is called), p99 (median over rounds): a %.3f ms, b %.3f ms\n",
        median($lat['daemon']['max']), median($lat['fork']['max']), median($wake['daemon']), median($wake['fork'])
    );
}

// ---------------------------------------------------------------------------------------------

if (!class_exists('Forklift\Daemon')) {
    fwrite(STDERR, "bench/daemon.php: Forklift\\Daemon is not available; run with -d extension=target/release/libforklift.so\n");
    exit(3);
}
if (!function_exists('pcntl_fork') || !function_exists('posix_kill')) {
    fwrite(STDERR, "bench/daemon.php: ext-pcntl and ext-posix are needed for the baselines\n");
    exit(3);
}
register_shutdown_function([Leftovers::class, 'cleanUp']);
$mode = $argv[1] ?? 'all';
$n = (int) ($argv[2] ?? 0);
match ($mode) {
    'all' => main(),
    'drift-daemon' => mode_drift_daemon($n, $argv[3]),
    'drift-loop' => mode_drift_loop($n),
    'latency-daemon' => mode_latency_daemon($n, $argv[3]),
    'latency-fork' => mode_latency_fork($n),
    'pcntl-dispatcher' => mode_pcntl_dispatcher($n, (int) $argv[3]),
    default => fail("unknown mode $mode (all, drift-daemon, drift-loop, latency-daemon, latency-fork, pcntl-dispatcher)"),
};
