<?php
/*
 * Fork round-trip micro-benchmark: fork a child that returns 42, get the value
 * back in the parent, reap the child.
 *
 * usage: php fork.php <forklift|pcntl|pcntl-careful> <MB> <iterations>
 * prints: per_op_us=<float> rss_kb=<VmRSS of this process after growing the heap>
 *
 * forklift mode needs the extension: php -d extension=.../libforklift.so fork.php forklift ...
 * pcntl mode needs only ext-pcntl, ext-sockets and ext-posix (built into Debian's php8.2-cli).
 */

declare(strict_types=1);

function usage(): never
{
    fwrite(STDERR, "usage: php fork.php <forklift|pcntl|pcntl-careful> <MB> <iterations>\n");
    exit(2);
}

function vm_rss_kb(): int
{
    $status = @file_get_contents('/proc/self/status');
    if ($status !== false && preg_match('/^VmRSS:\s+(\d+)\s+kB/m', $status, $m)) {
        return (int) $m[1];
    }
    return -1;
}

/** What Forklift offers: one call, value back, child reaped. */
function round_trip_forklift(): void
{
    $r = Forklift\fork(fn () => 42)->wait();
    if ($r->value() !== 42) {
        fwrite(STDERR, "bad result\n");
        exit(1);
    }
}

/** What users write by hand today with pcntl + sockets + serialize. */
function round_trip_pcntl(): void
{
    round_trip_by_hand(false);
}

/** The same, written by a careful user: the child skips PHP's shutdown by killing itself. */
function round_trip_pcntl_careful(): void
{
    round_trip_by_hand(true);
}

function round_trip_by_hand(bool $careful): void
{
    if (!socket_create_pair(AF_UNIX, SOCK_STREAM, 0, $pair)) {
        fwrite(STDERR, 'socket_create_pair: ' . socket_strerror(socket_last_error()) . "\n");
        exit(1);
    }
    $pid = pcntl_fork();
    if ($pid < 0) {
        fwrite(STDERR, "pcntl_fork failed\n");
        exit(1);
    }
    if ($pid === 0) {
        // child
        socket_close($pair[0]);
        $s = serialize(42);
        $frame = pack('N', strlen($s)) . $s;
        while ($frame !== '') {
            $n = socket_write($pair[1], $frame);
            if ($n === false) {
                exit(1);
            }
            $frame = (string) substr($frame, $n);
        }
        socket_close($pair[1]);
        if ($careful) {
            posix_kill(getmypid(), SIGKILL);
        }
        // exit(0) is what most hand-written code does. It runs the inherited request
        // shutdown (shutdown functions, destructors, freeing the copied heap) in the
        // child, which is both slower and unsafe with inherited connections; a careful
        // user would posix_kill(getmypid(), SIGKILL) instead. We measure the common case.
        exit(0);
    }
    // parent
    socket_close($pair[1]);
    $sock = $pair[0];
    $header = read_exact($sock, 4);
    $len = unpack('N', $header)[1];
    $value = unserialize(read_exact($sock, $len));
    socket_close($sock);
    pcntl_waitpid($pid, $status);
    $clean = $careful
        ? pcntl_wifsignaled($status) && pcntl_wtermsig($status) === SIGKILL
        : pcntl_wifexited($status) && pcntl_wexitstatus($status) === 0;
    if ($value !== 42 || !$clean) {
        fwrite(STDERR, "bad result\n");
        exit(1);
    }
}

function read_exact(Socket $sock, int $len): string
{
    $buf = '';
    while (strlen($buf) < $len) {
        $chunk = socket_read($sock, $len - strlen($buf), PHP_BINARY_READ);
        if ($chunk === false || $chunk === '') {
            fwrite(STDERR, "short read from child\n");
            exit(1);
        }
        $buf .= $chunk;
    }
    return $buf;
}

if ($argc !== 4 || !in_array($argv[1], ['forklift', 'pcntl', 'pcntl-careful'], true)
    || !ctype_digit($argv[2]) || !ctype_digit($argv[3]) || (int) $argv[3] < 1) {
    usage();
}
[$mode, $mb, $iters] = [$argv[1], (int) $argv[2], (int) $argv[3]];

if ($mode === 'forklift' && !function_exists('Forklift\fork')) {
    fwrite(STDERR, "Forklift\\fork is not available (extension not loaded or not built yet)\n");
    exit(3);
}
if ($mode !== 'forklift') {
    foreach (['pcntl_fork', 'socket_create_pair', 'posix_kill'] as $fn) {
        if (!function_exists($fn)) {
            fwrite(STDERR, "$fn is not available (need ext-pcntl, ext-sockets, ext-posix)\n");
            exit(3);
        }
    }
}

ini_set('memory_limit', '-1');

// Grow the heap to ~$mb MB of really resident memory: distinct random strings, so every
// page is written. 256 KiB pieces pack into Zend MM's 2 MB chunks without waste.
$piece = (256 << 10) - 64;
$heap = [];
for ($i = 0, $n = $mb * 4; $i < $n; $i++) {
    $heap[] = random_bytes($piece);
}

$fn = ['forklift' => 'round_trip_forklift', 'pcntl' => 'round_trip_pcntl', 'pcntl-careful' => 'round_trip_pcntl_careful'][$mode];

for ($i = 0; $i < 20; $i++) {
    $fn();
}

$start = hrtime(true);
for ($i = 0; $i < $iters; $i++) {
    $fn();
}
$elapsed = hrtime(true) - $start;

printf("per_op_us=%.1f rss_kb=%d\n", $elapsed / $iters / 1e3, vm_rss_kb());
// keep $heap alive until after the measurement
if (count($heap) !== $mb * 4) {
    exit(1);
}
