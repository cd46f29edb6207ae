<?php

declare(strict_types=1);

namespace Forklift\Tests\Messenger;

use Forklift\Messenger\HandlerCrashedException;
use Forklift\Tests\Support\DaemonKit;
use Forklift\Tests\Support\Procfs;
use Forklift\Tests\Support\Redis;
use PHPUnit\Framework\TestCase;
use Symfony\Component\Messenger\Envelope;
use Symfony\Component\Messenger\Stamp\ErrorDetailsStamp;

require_once __DIR__ . '/autoload.php';

/**
 * `bin/console forklift:consume` in a real Symfony 5.4 kernel (FrameworkBundle, Messenger
 * configured as an application does, Forklift's bundle), on a real Redis: the bundle wires the
 * commands with Messenger's own services, the framework's retry strategy and failure transport
 * apply to a segfaulting handler.
 */
final class KernelConsumerTest extends TestCase
{
    private static ?Redis $redis = null;
    private string $dir;

    public static function setUpBeforeClass(): void
    {
        self::$redis = new Redis();
    }

    public static function tearDownAfterClass(): void
    {
        self::$redis?->stop();
        self::$redis = null;
    }

    protected function setUp(): void
    {
        $this->dir = DaemonKit::tempDir();
        self::$redis->client()->flushAll();
    }

    protected function tearDown(): void
    {
        DaemonKit::removeDir($this->dir);
    }

    /** Runs the kernel's console with `$args`; [exit code, stdout + stderr]. */
    private function console(array $args): array
    {
        $env = getenv() + [];
        $env['FORKLIFT_TEST_KERNEL_DIR'] = $this->dir;
        $env['FORKLIFT_TEST_REDIS'] = self::$redis->dsn();
        $env['FORKLIFT_TEST_LOG'] = "$this->dir/handled.log";
        $env['FORKLIFT_RUN_DIR'] = $this->dir;
        $proc = proc_open(
            [PHP_BINARY, '-d', 'extension=' . Procfs::loadedExtension(), __DIR__ . '/kernel/console.php', ...$args],
            [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['redirect', 1]],
            $pipes,
            null,
            $env,
        );
        $out = (string) stream_get_contents($pipes[1]);

        return [proc_close($proc), $out];
    }

    private function transport(string $name): \Symfony\Component\Messenger\Transport\TransportInterface
    {
        $close = [];

        return forklift_test_transport(self::$redis->dsn() . "/$name/g/c", $close);
    }

    public function test_the_bundle_gives_bin_console_both_commands(): void
    {
        [$code, $out] = $this->console(['list', 'forklift']);
        $this->assertSame(0, $code, $out);
        $this->assertStringContainsString('forklift:consume', $out);
        $this->assertStringContainsString('forklift:stop-workers', $out);
        [$code, $out] = $this->console(['forklift:consume', '--help']);
        $this->assertStringContainsString('--workers', $out);
        $this->assertStringContainsString('async', $out, 'the receivers Messenger knows are the default');
    }

    public function test_a_segfaulting_handler_is_retried_by_the_framework_then_in_its_failure_transport(): void
    {
        $async = $this->transport('async');
        $async->send(new Envelope(new Job('ok', 'fine')));
        $async->send(new Envelope(new Job('segfault', 'crash')));
        [$code, $out] = $this->console(['forklift:consume', 'async', '--limit=3', '--sleep=0.05', '--workers=2']);
        $this->assertSame(0, $code, $out);

        $lines = file("$this->dir/handled.log", FILE_IGNORE_NEW_LINES);
        sort($lines);
        $this->assertCount(3, $lines, 'fine once, crash twice (max_retries: 1)');
        $this->assertMatchesRegularExpression('/^crash \d+ segfault$/', $lines[0]);
        $this->assertMatchesRegularExpression('/^crash \d+ segfault$/', $lines[1]);
        $this->assertMatchesRegularExpression('/^fine \d+ ok$/', $lines[2]);

        $failed = $this->transport('failed');
        $envelopes = [...$failed->get()];
        $this->assertCount(1, $envelopes);
        $this->assertSame('crash', $envelopes[0]->getMessage()->tag);
        $details = $envelopes[0]->last(ErrorDetailsStamp::class);
        $this->assertSame(HandlerCrashedException::class, $details->getExceptionClass());
        $this->assertStringContainsString('killed by signal 11 (SIGSEGV)', $details->getExceptionMessage());
    }

    public function test_bad_options_are_refused_by_the_command(): void
    {
        [$code, $out] = $this->console(['forklift:consume', 'async', '--workers=0']);
        $this->assertNotSame(0, $code);
        $this->assertStringContainsString('Option "workers" must be a positive integer', $out);
        [$code, $out] = $this->console(['forklift:consume', 'nosuch']);
        $this->assertNotSame(0, $code);
        $this->assertStringContainsString('The receiver "nosuch" does not exist. Valid receivers are: async, failed.', $out);
    }
}
