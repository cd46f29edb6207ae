<?php

declare(strict_types=1);

namespace Forklift\Tests;

use PHPUnit\Framework\TestCase;

/** stubs/forklift.stub.php and the built extension describe the same API. */
final class StubTest extends TestCase
{
    public function test_the_stub_declares_exactly_what_the_extension_provides(): void
    {
        $root = dirname(__DIR__, 2);
        $tool = __DIR__ . '/tools/describe-api.php';
        $ext = $this->run_php(['-d', 'extension=' . $root . '/target/release/libforklift.so', $tool]);
        // The stub is read by a PHP without the extension, where its declarations do not clash.
        $stub = $this->run_php(['-n', $tool, $root . '/stubs/forklift.stub.php']);
        $this->assertNotEmpty(json_decode($ext, true)['functions'], 'the extension exposes functions');
        $this->assertSame(json_decode($ext, true), json_decode($stub, true));
    }

    /** @param list<string> $args */
    private function run_php(array $args): string
    {
        $proc = proc_open([PHP_BINARY, ...$args], [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        $this->assertSame(0, proc_close($proc), $err);
        return $out;
    }
}
