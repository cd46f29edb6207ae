<?php

declare(strict_types=1);

namespace Forklift\Tests;

use Forklift\Daemon;
use Forklift\Tests\Support\CliProcess;
use Forklift\Tests\Support\DaemonKit;
use PHPUnit\Framework\TestCase;

use function Forklift\Tests\Support\forklift_cli;

/**
 * Real daemons started with `bin/forklift run`, driven with real signals, the CLI and the status
 * socket. Each test waits on what the daemon says (its log lines, socket answers, /proc).
 */
final class SupervisorTest extends TestCase
{
    private string $dir;
    private string $pidFile;
    /** @var list<CliProcess> */
    private array $started = [];

    protected function setUp(): void
    {
        $this->dir = DaemonKit::tempDir();
        $this->pidFile = "$this->dir/sup.pid";
    }

    protected function tearDown(): void
    {
        foreach ($this->started as $p) {
            if ($p->exit === null) {
                $p->kill(SIGKILL);
                $p->wait(5);
            }
        }
        DaemonKit::removeDir($this->dir);
    }

    /** Writes APP.php: `$body` defines jobs on `$d` (pid file in the test's dir). */
    private function app(string $body, string $options = ''): string
    {
        $file = "$this->dir/app.php";
        file_put_contents($file, <<<PHP
        <?php
        \$d = new Forklift\\Daemon('sup', pidFile: '$this->pidFile' $options);
        \$dir = '$this->dir';
        $body
        return \$d;
        PHP);
        return $file;
    }

    private function start(string $app): CliProcess
    {
        $p = new CliProcess(['run', $app]);
        $this->started[] = $p;
        return $p;
    }

    /** Starts the daemon and waits until its dispatcher runs; returns [process, dispatcher pid]. */
    private function startRunning(string $app): array
    {
        $p = $this->start($app);
        $m = $p->waitFor('/dispatcher pid (\d+) is running/');
        $this->assertNotNull($m, "the daemon did not come up:\n" . $p->log);
        return [$p, (int) $m[1]];
    }

    private function status(): array
    {
        return json_decode(Daemon::query($this->pidFile, 'status'), true, 512, JSON_THROW_ON_ERROR);
    }

    /** Appends a line to a file in one write (jobs in several processes share it). */
    private static function record(): string
    {
        return 'file_put_contents("$dir/record", $line . "\n", FILE_APPEND | LOCK_EX);';
    }

    public function test_the_process_tree_has_titles_and_status_shows_it(): void
    {
        [$p, $dispatcher] = $this->startRunning($this->app(<<<'PHP'
        $d->job('sleeper', fn () => sleep(30), parallel: true);
        $d->every(0.01, function () use ($d) { static $once = false; if (!$once) { $once = true; $d->start('sleeper'); } });
        PHP, ', stopTimeout: 0.3'));
        $deadline = microtime(true) + 10;
        do {
            $s = $this->status();
        } while ($s['running'] === [] && microtime(true) < $deadline && usleep(5000) === null);
        $this->assertSame($p->pid(), $s['supervisor']);
        $this->assertSame($dispatcher, $s['dispatcher']);
        $job = $s['running'][0]['pid'];
        $this->assertSame('forklift: sup supervisor', trim(file_get_contents("/proc/{$p->pid()}/cmdline"), "\0"));
        $this->assertSame('forklift: sup dispatcher', trim(file_get_contents("/proc/$dispatcher/cmdline"), "\0"));
        // The child sets its title first thing after the fork: wait for it (/proc is the event).
        $title = fn () => trim((string) @file_get_contents("/proc/$job/cmdline"), "\0");
        $deadline = microtime(true) + 10;
        while ($title() !== 'forklift: sup parallel - sleeper - asked' && microtime(true) < $deadline) {
            usleep(1000);
        }
        $this->assertSame('forklift: sup parallel - sleeper - asked', $title());
        $text = forklift_cli(['status', "--pid-file=$this->pidFile"]);
        $this->assertSame(0, $text['status'], $text['err']);
        $this->assertMatchesRegularExpression('/^sup\s+running\nsupervisor ' . $p->pid() . '\s+dispatcher ' . $dispatcher . '/', $text['out']);
        $this->assertMatchesRegularExpression('/\(parallel\)\s+sleeper\s+-\s+' . $job . '\s/', $text['out']);
        $json = forklift_cli(['status', "--pid-file=$this->pidFile", '--json']);
        $this->assertSame($job, json_decode($json['out'], true)['running'][0]['pid']);
        // stop --wait returns only when every process of the daemon has exited.
        $stop = forklift_cli(['stop', "--pid-file=$this->pidFile", '--timeout=20']);
        $this->assertSame(0, $stop['status'], $stop['err'] . $p->log);
        $this->assertStringContainsString('every process of the daemon has exited', $stop['out']);
        foreach ([$p->pid(), $dispatcher, $job] as $pid) {
            $this->assertFalse(DaemonKit::alive($pid), "pid $pid still alive after stop --wait");
        }
        $this->assertSame(0, $p->wait(5));
        $this->assertMatchesRegularExpression('/job sleeper \(pid ' . $job . '\) ended: timeout/', $p->log);
        $this->assertFileDoesNotExist($this->pidFile);
    }

    public function test_a_killed_dispatcher_is_restarted_with_backoff(): void
    {
        [$p, $first] = $this->startRunning($this->app('$d->every(1, fn () => null);', ', restartDelay: 0.2'));
        posix_kill($first, SIGKILL);
        $this->assertNotNull($p->waitFor("/dispatcher pid $first died: signal: killed by signal 9/"), $p->log);
        $m = $p->waitFor('/restarting the dispatcher in ([0-9.]+) s \(attempt 1\)/');
        $this->assertNotNull($m, $p->log);
        $this->assertGreaterThanOrEqual(0.1, (float) $m[1], 'jitter stays within [50 %, 100 %] of the delay');
        $this->assertLessThanOrEqual(0.2, (float) $m[1]);
        $m = $p->waitFor('/dispatcher pid (\d+) is running/');
        $this->assertNotNull($m, $p->log);
        $second = (int) $m[1];
        $this->assertNotSame($first, $second);
        $s = $this->status();
        $this->assertSame($second, $s['dispatcher']);
        $this->assertSame(1, $s['dispatcher_restarts']);
    }

    public function test_a_crash_loop_gives_up_with_a_non_zero_exit(): void
    {
        $p = $this->start($this->app(
            '$d->every(0.01, fn () => posix_kill(getmypid(), SIGKILL));',
            ', restartBurst: 3, restartWindow: 60, restartDelay: 0.01, restartDelayMax: 0.05'
        ));
        $this->assertSame(1, $p->wait(20), $p->log);
        $this->assertSame(3, substr_count($p->log, 'died: signal: killed by signal 9'), $p->log);
        $this->assertStringContainsString('giving up', $p->log);
        $this->assertFileDoesNotExist($this->pidFile);
    }

    public function test_sigterm_lets_the_running_job_finish_then_exits_0(): void
    {
        [$p, $dispatcher] = $this->startRunning($this->app(<<<'PHP'
        $d->job('work', function () use ($dir) { file_put_contents("$dir/started", getmypid()); usleep(400000); return 'finished'; }, parallel: true);
        $d->every(0.01, function () use ($d) { static $once = false; if (!$once) { $once = true; $d->start('work'); } });
        PHP));
        $deadline = microtime(true) + 10;
        while (!file_exists("$this->dir/started") && microtime(true) < $deadline) {
            usleep(2000);
        }
        $p->kill(SIGTERM);
        $this->assertSame(0, $p->wait(20), $p->log);
        $this->assertMatchesRegularExpression('/job work \(pid \d+\) ended: ok in 0\.[34]\d* s/', $p->log);
        $this->assertStringContainsString('stopped: every process of the daemon has exited', $p->log);
        $this->assertFalse(DaemonKit::alive($dispatcher));
    }

    public function test_hup_starts_a_new_dispatcher_and_a_running_job_is_not_started_twice(): void
    {
        $record = self::record();
        [$p, $first] = $this->startRunning($this->app(<<<PHP
        \$d->job('long', function () use (\$dir) {
            \$line = 'start ' . microtime(true); $record
            while (!file_exists("\$dir/release")) { usleep(2000); }
            \$line = 'end ' . microtime(true); $record
        }, parallel: true);
        \$d->every(0.02, fn () => \$d->start('long'), name: 'starter');
        PHP));
        // The job runs in the first dispatcher.
        $deadline = microtime(true) + 10;
        while (!file_exists("$this->dir/record") && microtime(true) < $deadline) {
            usleep(2000);
        }
        $p->kill(SIGHUP);
        $m = $p->waitFor('/dispatcher pid (\d+) is running/');
        $this->assertNotNull($m, $p->log);
        $second = (int) $m[1];
        $this->assertNotSame($first, $second);
        // The new dispatcher knows the job still runs in the old one and does not start it.
        $this->assertNotNull($p->waitFor('/job long not started: still running in the previous dispatcher/'), $p->log);
        touch("$this->dir/release");
        $this->assertNotNull($p->waitFor("/previous dispatcher pid $first has finished/"), $p->log);
        // Once it has ended there, the new dispatcher runs it.
        $this->assertNotNull($p->waitFor("/dispatcher\\[$second\\] info: job long \\(pid \\d+\\) ended/"), $p->log);
        $s = $this->status();
        $this->assertSame($second, $s['dispatcher']);
        $this->assertSame(1, $s['dispatcher_restarts']);
        $this->assertFalse(DaemonKit::alive($first));
        // Runs never overlapped: start, end, start, end, ...
        $lines = file("$this->dir/record", FILE_IGNORE_NEW_LINES);
        $kinds = array_map(fn ($l) => explode(' ', $l)[0], $lines);
        for ($i = 0; $i + 1 < count($kinds); $i += 2) {
            $this->assertSame(['start', 'end'], [$kinds[$i], $kinds[$i + 1]], implode("\n", $lines));
        }
    }

    public function test_kill_9_of_the_supervisor_leaves_no_process_of_the_daemon(): void
    {
        [$p, $dispatcher] = $this->startRunning($this->app(<<<'PHP'
        $d->job('deep', function () use ($dir) {
            // A grandchild in the job's group, as a shell-out would make.
            $pid = pcntl_fork();
            if ($pid === 0) { file_put_contents("$dir/grandchild", getmypid()); sleep(60); exit(0); }
            file_put_contents("$dir/job", getmypid());
            sleep(60);
        }, parallel: true);
        $d->every(0.01, function () use ($d) { static $once = false; if (!$once) { $once = true; $d->start('deep'); } });
        PHP));
        $deadline = microtime(true) + 10;
        while ((!file_exists("$this->dir/grandchild") || !file_exists("$this->dir/job")) && microtime(true) < $deadline) {
            usleep(2000);
        }
        $pids = [$p->pid(), $dispatcher, (int) file_get_contents("$this->dir/job"), (int) file_get_contents("$this->dir/grandchild")];
        foreach ($pids as $pid) {
            $this->assertTrue(DaemonKit::alive($pid), "pid $pid runs before the kill");
        }
        $p->kill(SIGKILL);
        $p->wait(5);
        $this->assertTrue(DaemonKit::waitGone($pids, 1.0), 'left after 1 s: ' . implode(', ', array_filter($pids, [DaemonKit::class, 'alive'])));
    }

    public function test_a_second_instance_is_refused_and_a_stale_pid_file_is_taken_over(): void
    {
        file_put_contents($this->pidFile, "999999999\n"); // left by a daemon killed with -9
        $app = $this->app('$d->every(1, fn () => null);');
        [$p] = $this->startRunning($app);
        $this->assertSame((string) $p->pid(), trim(file_get_contents($this->pidFile)));
        $second = new CliProcess(['run', $app]);
        $this->assertSame(1, $second->wait(20), $second->log);
        $this->assertStringContainsString('daemon already running as pid ' . $p->pid(), $second->log);
        $this->assertSame((string) $p->pid(), trim(file_get_contents($this->pidFile)), 'the running one keeps its pid file');
        $this->assertSame(['running'], [$this->status()['state']]);
    }

    public function test_an_application_that_returns_no_daemon_is_refused_and_nothing_starts(): void
    {
        file_put_contents("$this->dir/app.php", "<?php\nreturn 42;\n");
        $p = $this->start("$this->dir/app.php");
        $this->assertSame(1, $p->wait(20), $p->log);
        $this->assertStringContainsString('returned int, not a Forklift\Daemon; end the file with `return $daemon;`', $p->log);
        $this->assertStringContainsString('the application failed before its daemon started', $p->log);
        $this->assertSame([], array_values(array_diff(scandir($this->dir), ['.', '..', 'app.php'])));
    }

    public function test_a_bad_definition_in_the_application_stops_the_start_with_its_message(): void
    {
        $p = $this->start($this->app("\$d->cron('61 * * * *', 'bad', fn () => null);"));
        $this->assertSame(1, $p->wait(20), $p->log);
        $this->assertStringContainsString('"61 * * * *" is not a crontab schedule', $p->log);
        $this->assertFileDoesNotExist($this->pidFile);
    }

    public function test_a_symlinked_pid_file_is_refused(): void
    {
        file_put_contents("$this->dir/elsewhere", 'untouched');
        symlink("$this->dir/elsewhere", $this->pidFile);
        $p = $this->start($this->app('$d->every(1, fn () => null);'));
        $this->assertSame(1, $p->wait(20), $p->log);
        $this->assertStringContainsString('is a symbolic link', $p->log);
        $this->assertSame('untouched', file_get_contents("$this->dir/elsewhere"));
    }

    public function test_stop_of_a_daemon_that_does_not_run_says_so(): void
    {
        $r = forklift_cli(['stop', "--pid-file=$this->dir/none.pid"]);
        $this->assertSame(3, $r['status']);
        $this->assertStringContainsString('no daemon runs with pid file', $r['err']);
        $r = forklift_cli(['status', "--pid-file=$this->dir/none.pid"]);
        $this->assertSame(3, $r['status']);
        $r = forklift_cli(['frobnicate']);
        $this->assertSame(2, $r['status']);
        $this->assertStringContainsString('unknown command "frobnicate"', $r['err']);
        $r = forklift_cli(['run', "$this->dir/missing.php"]);
        $this->assertSame(2, $r['status']);
        $this->assertStringContainsString('is not a readable file', $r['err']);
    }

    public function test_systemd_hears_ready_reloading_stopping_and_watchdog_pings(): void
    {
        $path = "$this->dir/notify";
        $server = stream_socket_server("udg://$path", $errno, $error, STREAM_SERVER_BIND);
        $this->assertNotFalse($server, $error);
        $next = function () use ($server): ?string {
            $r = [$server];
            $w = $e = null;
            if (stream_select($r, $w, $e, 10) !== 1) {
                return null;
            }
            return stream_socket_recvfrom($server, 4096);
        };
        // WATCHDOG_PID must be the supervisor's own pid: the shell execs PHP, which keeps it.
        $p = new CliProcess(
            ['run', $this->app('$d->every(1, fn () => null);')],
            ['NOTIFY_SOCKET' => $path, 'WATCHDOG_USEC' => '100000'],
            ['sh', '-c', 'WATCHDOG_PID=$$ exec "$0" "$@"']
        );
        $this->started[] = $p;
        $messages = [];
        $expect = function (string $prefix) use ($next, &$messages): string {
            while (($m = $next()) !== null) {
                $messages[] = $m;
                if (str_starts_with($m, $prefix)) {
                    return $m;
                }
            }
            $this->fail("no \"$prefix\" among: " . json_encode($messages));
        };
        $ready = $expect('READY=1');
        $this->assertMatchesRegularExpression('/^READY=1\nSTATUS=dispatcher pid \d+$/', $ready);
        $expect('WATCHDOG=1');
        $expect('WATCHDOG=1');
        $p->kill(SIGHUP);
        $expect('RELOADING=1');
        $this->assertMatchesRegularExpression('/^READY=1\nSTATUS=reloaded: dispatcher pid \d+$/', $expect('READY=1'));
        $p->kill(SIGTERM);
        $expect('STOPPING=1');
        $this->assertSame(0, $p->wait(20), $p->log);
    }

    public function test_sigusr1_writes_the_status_to_the_log(): void
    {
        [$p, $dispatcher] = $this->startRunning($this->app('$d->every(1, fn () => null, name: "beat");'));
        $p->kill(SIGUSR1);
        $m = $p->waitFor('/dispatcher\[' . $dispatcher . '\] info: status: (\{.*\})$/');
        $this->assertNotNull($m, $p->log);
        $status = json_decode($m[1], true, 512, JSON_THROW_ON_ERROR);
        $this->assertSame('beat', $status['jobs'][0]['name']);
    }

    /** Waits until `$file` has a line matching `$regex` (the daemon writes its log there). */
    private function waitInFile(string $file, string $regex, float $timeout = 10.0): ?array
    {
        $deadline = microtime(true) + $timeout;
        do {
            if (is_file($file) && preg_match($regex, (string) file_get_contents($file), $m)) {
                return $m;
            }
            usleep(5000);
        } while (microtime(true) < $deadline);
        return null;
    }

    public function test_daemonize_detaches_into_its_own_session_with_the_log_as_stdio(): void
    {
        $log = "$this->dir/daemon.log";
        $r = forklift_cli(['run', $this->app('$d->every(1, fn () => null);'), '--daemonize', "--log=$log"]);
        $this->assertSame(0, $r['status'], $r['err']);
        $this->assertMatchesRegularExpression('/started in the background \(supervisor pid \d+, log: ' . preg_quote($log, '/') . '\)/', $r['out']);
        $m = $this->waitInFile($log, '/supervisor\[(\d+)\] info: dispatcher pid (\d+) is running/');
        $this->assertNotNull($m, (string) @file_get_contents($log));
        $supervisor = (int) $m[1];
        $this->assertSame('/', readlink("/proc/$supervisor/cwd"));
        $this->assertSame($log, readlink("/proc/$supervisor/fd/2"));
        $this->assertSame($log, readlink("/proc/$supervisor/fd/1"));
        $this->assertSame('/dev/null', readlink("/proc/$supervisor/fd/0"));
        $this->assertNotSame(posix_getsid(0), posix_getsid($supervisor), 'a session of its own');
        $stop = forklift_cli(['stop', "--pid-file=$this->pidFile"]);
        $this->assertSame(0, $stop['status'], $stop['err']);
        $this->assertFalse(DaemonKit::alive($supervisor));
    }

    public function test_daemonize_says_when_the_daemon_did_not_start(): void
    {
        $app = $this->app('$d->every(1, fn () => null);');
        [$p] = $this->startRunning($app);
        $r = forklift_cli(['run', $app, '--daemonize', '--log', "$this->dir/second.log"]);
        $this->assertSame(1, $r['status'], $r['out'] . $r['err']);
        $this->assertStringContainsString('the daemon did not start: daemon already running as pid ' . $p->pid(), $r['err']);
        file_put_contents("$this->dir/bad.php", "<?php\nreturn 'nope';\n");
        $r = forklift_cli(['run', "$this->dir/bad.php", '--daemonize', "--log=$this->dir/bad.log"]);
        $this->assertSame(1, $r['status']);
        $this->assertStringContainsString('returned string, not a Forklift\Daemon', $r['err']);
    }

    public function test_a_start_that_cannot_work_fails_at_once_instead_of_restarting(): void
    {
        // The status socket's path is over the 107 bytes a unix socket allows.
        $deep = $this->dir . '/' . str_repeat('d', 100);
        mkdir($deep);
        file_put_contents("$this->dir/app.php", "<?php\n\$d = new Forklift\\Daemon('sup', pidFile: '$deep/sup.pid');\n\$d->every(1, fn () => null);\nreturn \$d;\n");
        $p = $this->start("$this->dir/app.php");
        $this->assertSame(1, $p->wait(20), $p->log);
        $this->assertStringContainsString('unix sockets allow at most 107', $p->log);
        $this->assertStringContainsString('the daemon failed while starting', $p->log);
        $this->assertStringNotContainsString('restarting', $p->log);
    }

    public function test_a_daemon_whose_pid_file_was_removed_keeps_its_socket_from_a_second_one(): void
    {
        $app = $this->app('$d->every(1, fn () => null);');
        [$p, $dispatcher] = $this->startRunning($app);
        unlink($this->pidFile); // a tmp cleaner, an admin
        $second = new CliProcess(['run', $app]);
        $this->assertSame(1, $second->wait(20), $second->log);
        $this->assertStringContainsString('a daemon already answers at', $second->log);
        // The first one still answers on its socket.
        $this->assertSame($dispatcher, json_decode(\Forklift\Tests\Support\Probe::status("$this->dir/sup.sock"), true)['dispatcher']);
    }

    public function test_a_job_s_detached_grandchild_dies_with_its_dispatcher(): void
    {
        [$p, $dispatcher] = $this->startRunning($this->app(<<<'PHP'
        $d->job('spawner', function () use ($dir) {
            $pid = pcntl_fork();
            if ($pid === 0) { posix_setsid(); file_put_contents("$dir/detached", getmypid()); sleep(60); exit(0); }
            sleep(60);
        }, parallel: true);
        $d->every(0.01, function () use ($d) { static $once = false; if (!$once) { $once = true; $d->start('spawner'); } });
        PHP));
        $deadline = microtime(true) + 10;
        while (!file_exists("$this->dir/detached") && microtime(true) < $deadline) {
            usleep(2000);
        }
        $detached = (int) file_get_contents("$this->dir/detached");
        $this->assertNotSame(posix_getsid($dispatcher), posix_getsid($detached), 'it left the session');
        posix_kill($dispatcher, SIGKILL);
        $this->assertNotNull($p->waitFor('/killed \d+ process\(es\) that jobs had left running outside their group/'), $p->log);
        $this->assertTrue(DaemonKit::waitGone([$detached], 1.0));
        $this->assertNotNull($p->waitFor('/dispatcher pid \d+ is running/'), $p->log);
    }

    public function test_stop_refuses_a_pid_file_that_names_another_program(): void
    {
        $sleeper = proc_open(['sleep', '30'], [], $pipes);
        $pid = proc_get_status($sleeper)['pid'];
        // A pid file held (locked) by a process that is not a Forklift daemon.
        $holder = proc_open([PHP_BINARY, '-r', '$f = fopen($argv[1], "c+"); flock($f, LOCK_EX); ftruncate($f, 0); fwrite($f, $argv[2] . "\n"); fwrite(STDOUT, "locked\n"); fgets(STDIN);', $this->pidFile, (string) $pid],
            [0 => ['pipe', 'r'], 1 => ['pipe', 'w']], $hp);
        $this->assertSame("locked\n", fgets($hp[1]));
        $r = forklift_cli(['stop', "--pid-file=$this->pidFile"]);
        $this->assertSame(1, $r['status']);
        $this->assertStringContainsString("which is not a Forklift daemon", $r['err']);
        $this->assertTrue(DaemonKit::alive($pid), 'not signalled');
        fclose($hp[0]);
        proc_close($holder);
        proc_terminate($sleeper, SIGKILL);
        proc_close($sleeper);
    }

    public function test_reload_reports_a_new_dispatcher_that_cannot_load(): void
    {
        $app = $this->app('$d->every(1, fn () => null);');
        [$p, $first] = $this->startRunning($app);
        file_put_contents($app, "<?php\nthrow new RuntimeException('broken deploy');\n");
        $r = forklift_cli(['reload', "--pid-file=$this->pidFile", '--timeout=3']);
        $this->assertSame(1, $r['status'], $r['out'] . $r['err']);
        $this->assertStringContainsString('no new dispatcher answered', $r['err']);
        $this->assertNotNull($p->waitFor('/reload failed: the new dispatcher pid \d+ died while loading the application \(exception: uncaught RuntimeException: broken deploy/'), $p->log);
        $this->assertSame($first, json_decode(Daemon::query($this->pidFile, 'status'), true)['dispatcher'], 'the old one goes on');
    }

    public function test_user_drops_privileges_before_the_application_is_loaded(): void
    {
        if (posix_geteuid() !== 0) {
            $this->markTestSkipped('needs root to change user');
        }
        $nobody = posix_getpwnam('nobody');
        chmod($this->dir, 0777);
        $app = $this->app('$d->every(1, fn () => null); file_put_contents("$dir/loaded-as", posix_geteuid());');
        chmod($app, 0644);
        [$p, $dispatcher] = (function () use ($app) {
            $p = new CliProcess(['run', $app, '--user=nobody']);
            $this->started[] = $p;
            $m = $p->waitFor('/dispatcher pid (\d+) is running/');
            $this->assertNotNull($m, $p->log);
            return [$p, (int) $m[1]];
        })();
        $this->assertSame((string) $nobody['uid'], file_get_contents("$this->dir/loaded-as"));
        foreach ([$p->pid(), $dispatcher] as $pid) {
            $this->assertMatchesRegularExpression('/\nUid:\s+' . $nobody['uid'] . '\s+' . $nobody['uid'] . '\s/', file_get_contents("/proc/$pid/status"));
        }
        $this->assertSame($nobody['uid'], fileowner($this->pidFile));
        $p->kill(SIGTERM);
        $this->assertSame(0, $p->wait(20), $p->log);
    }

    public function test_an_unwritable_pid_file_directory_is_named_in_the_refusal(): void
    {
        if (posix_geteuid() !== 0) {
            $this->markTestSkipped('needs root to run the daemon as another user');
        }
        chmod($this->dir, 0755); // root's: nobody cannot create the pid file in it
        $app = $this->app('$d->every(1, fn () => null);');
        chmod($app, 0644);
        $p = new CliProcess(['run', $app, '--user=nobody']);
        $this->started[] = $p;
        $this->assertSame(1, $p->wait(20), $p->log);
        $this->assertStringContainsString($this->pidFile, $p->log);
        $this->assertMatchesRegularExpression('/not writable|permission/i', $p->log);
        $this->assertFileDoesNotExist($this->pidFile);
    }

    public function test_a_monolog_logger_gets_the_dispatcher_s_lines(): void
    {
        $this->assertFileExists('/usr/share/php/Monolog/autoload.php', 'scripts/setup.sh installs php-monolog');
        $log = "$this->dir/monolog.log";
        [$p] = $this->startRunning($this->app(<<<PHP
        require_once '/usr/share/php/Monolog/autoload.php';
        \$logger = new Monolog\\Logger('shop', [new Monolog\\Handler\\StreamHandler('$log')]);
        \$d = new Forklift\\Daemon('sup', pidFile: '$this->pidFile', logger: \$logger);
        \$d->job('quick', fn () => 1, parallel: true);
        \$d->every(0.01, function () use (\$d) { static \$once = false; if (!\$once) { \$once = true; \$d->start('quick'); } });
        PHP));
        $m = $this->waitInFile($log, '/shop\.INFO: job quick \(pid \d+\) ended: ok in/');
        $this->assertNotNull($m, (string) @file_get_contents($log));
        $this->assertStringContainsString('shop.INFO: started (pid', file_get_contents($log));
        $p->kill(SIGTERM);
        $this->assertSame(0, $p->wait(20), $p->log);
        $this->assertStringContainsString('shop.INFO: stopped: every run has ended', file_get_contents($log));
    }

    public function test_metrics_pass_promtool(): void
    {
        $promtool = trim((string) shell_exec('command -v promtool'));
        if ($promtool === '') {
            $this->fail('promtool is not installed: run scripts/setup.sh (it installs Debian\'s prometheus package)');
        }
        [$p] = $this->startRunning($this->app(<<<'PHP'
        $d->job('quick "one"', fn () => 1, parallel: true);
        $d->job('failing', fn () => throw new RuntimeException('x'), parallel: true);
        $d->every(0.01, function () use ($d) { static $n = 0; if ($n++ < 3) { $d->start('quick "one"'); $d->start('failing'); } });
        PHP));
        $this->assertNotNull($p->waitFor('/job failing \(pid \d+\) ended/'), $p->log);
        $this->assertNotNull($p->waitFor('/job quick "one" \(pid \d+\) ended/'), $p->log);
        $r = forklift_cli(['metrics', "--pid-file=$this->pidFile"]);
        $this->assertSame(0, $r['status'], $r['err']);
        $this->assertMatchesRegularExpression('/forklift_job_runs_total\{daemon="sup",job="failing",outcome="exception"\} [1-3]/', $r['out']);
        $this->assertStringContainsString('job="quick \"one\""', $r['out']);
        $check = proc_open([$promtool, 'check', 'metrics'], [0 => ['pipe', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
        fwrite($pipes[0], $r['out']);
        fclose($pipes[0]);
        $out = stream_get_contents($pipes[1]) . stream_get_contents($pipes[2]);
        $this->assertSame(0, proc_close($check), $out . "\n" . $r['out']);
    }

    public function test_install_systemd_writes_a_unit_that_systemd_analyze_accepts(): void
    {
        $analyze = trim((string) shell_exec('command -v systemd-analyze'));
        $app = $this->app('$d->every(1, fn () => null);');
        $r = forklift_cli(['install-systemd', $app, "--dir=$this->dir", '--name=shop']);
        $this->assertSame(0, $r['status'], $r['err']);
        $unit = file_get_contents("$this->dir/forklift-shop.service");
        foreach (['Type=notify', 'KillMode=mixed', 'ExecReload=/bin/kill -HUP $MAINPID', 'Restart=on-failure'] as $line) {
            $this->assertStringContainsString($line, $unit);
        }
        $this->assertStringContainsString('copytruncate', file_get_contents("$this->dir/forklift-shop"));
        if ($analyze === '') {
            $this->fail('systemd-analyze is not installed: run scripts/setup.sh (it installs systemd)');
        }
        $check = proc_open([$analyze, 'verify', "$this->dir/forklift-shop.service"], [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
        $out = stream_get_contents($pipes[1]) . stream_get_contents($pipes[2]);
        $code = proc_close($check);
        // verify also checks that ExecStart's binary exists and warns about the system's other
        // units; what matters is that it finds nothing wrong in ours.
        $ours = array_filter(explode("\n", $out), fn ($l) => str_contains($l, 'forklift-shop'));
        $this->assertSame([], array_values($ours), $out);
        $this->assertSame(0, $code, $out);
    }
}
