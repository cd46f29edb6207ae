<?php

declare(strict_types=1);

namespace Forklift\Tests;

use Forklift\Pool;
use PHPUnit\Framework\TestCase;

use function Forklift\fork;

/**
 * var_dump() and print_r() of Forklift's objects show their data (through __debugInfo), so a
 * developer debugging a failed job sees what happened without calling every getter.
 */
final class DebugInfoTest extends TestCase
{
    private ?Pool $pool = null;
    /** @var list<resource> */
    private array $sockets = [];

    protected function tearDown(): void
    {
        // A task left blocked on a socket by a failed test must not hold the pool's destructor.
        if ($this->pool !== null) {
            $this->pool->kill();
            $this->pool = null;
        }
        foreach ($this->sockets as $socket) {
            if (is_resource($socket)) {
                fclose($socket);
            }
        }
    }

    public function test_var_dump_of_a_failed_job_shows_its_outcome_cause_and_exception_chain(): void
    {
        $line = __LINE__ + 2;
        $p = fork(function () {
            throw new \DomainException('the import broke at row 17', 7, new \LogicException('the database went away'));
        });
        $dump = $this->varDump($p->wait());

        $this->assertStringStartsWith('object(Forklift\JobResult)', $dump);
        $this->assertStringContainsString("[\"outcome\"]=>\n  string(9) \"exception\"", $dump);
        $this->assertStringContainsString("[\"ok\"]=>\n  bool(false)", $dump);
        $this->assertStringContainsString("[\"pid\"]=>\n  int({$p->pid()})", $dump);
        $this->assertStringContainsString("[\"exitCode\"]=>\n  int(255)", $dump);
        $this->assertStringContainsString('uncaught DomainException: the import broke at row 17', $dump, 'the cause');
        $this->assertStringContainsString('object(Forklift\ExceptionRecord)', $dump, 'the exception dumps itself');
        $this->assertStringContainsString('string(15) "DomainException"', $dump);
        $this->assertStringContainsString('string(26) "the import broke at row 17"', $dump);
        $this->assertStringContainsString("[\"code\"]=>\n    int(7)", $dump);
        $this->assertStringContainsString('"' . __FILE__ . '"', $dump);
        $this->assertStringContainsString("[\"line\"]=>\n    int($line)", $dump);
        $this->assertStringContainsString('string(14) "LogicException"', $dump, 'the previous exception dumps too');
        $this->assertStringContainsString('string(22) "the database went away"', $dump);
    }

    public function test_print_r_of_a_result_shows_its_value_and_its_error_records_with_file_and_line(): void
    {
        $line = __LINE__ + 3;
        $r = fork(function () {
            set_error_handler(null); // PHPUnit's handler would turn the warning into an exception.
            trigger_error('the feed had 3 bad rows', E_USER_WARNING);
            return ['imported' => 4711];
        })->wait();
        $this->assertSame('ok', $r->outcome(), (string) $r->cause());
        $out = print_r($r, true);

        $this->assertStringStartsWith('Forklift\JobResult Object', $out);
        $this->assertStringContainsString('[outcome] => ok', $out);
        $this->assertStringContainsString('[imported] => 4711', $out, 'the value');
        $this->assertStringContainsString('[attempts] => 1', $out);
        $this->assertMatchesRegularExpression('/\[duration\] => [0-9.eE-]+\n/', $out);
        $this->assertStringContainsString('Forklift\ErrorRecord Object', $out, 'the error records print themselves');
        $this->assertStringContainsString('[levelName] => E_USER_WARNING', $out);
        $this->assertStringContainsString('[message] => the feed had 3 bad rows', $out);
        $this->assertStringContainsString('[file] => ' . __FILE__ . "\n", $out);
        $this->assertStringContainsString("[line] => $line\n", $out);
    }

    public function test_var_dump_of_an_error_record_shows_level_message_file_line_and_trace(): void
    {
        $line = __LINE__ + 3;
        $r = fork(function () {
            set_error_handler(null);
            trigger_error('the ledger does not balance', E_USER_ERROR);
        })->wait();
        $this->assertSame('fatal', $r->outcome());
        $dump = $this->varDump($r->fatalError());

        $this->assertStringStartsWith('object(Forklift\ErrorRecord)', $dump);
        $this->assertStringContainsString("[\"level\"]=>\n  int(" . E_USER_ERROR . ')', $dump);
        $this->assertStringContainsString('string(12) "E_USER_ERROR"', $dump);
        $this->assertStringContainsString('string(27) "the ledger does not balance"', $dump);
        $this->assertStringContainsString("[\"file\"]=>\n  string(" . strlen(__FILE__) . ') "' . __FILE__ . '"', $dump);
        $this->assertStringContainsString("[\"line\"]=>\n  int($line)", $dump);
        $this->assertStringContainsString('#0 trigger_error()', $dump, 'the fatal error\'s trace');
        // And the result that holds it shows it as its fatal error.
        $this->assertStringContainsString("[fatalError] => Forklift\\ErrorRecord Object", print_r($r, true));
    }

    public function test_print_r_of_an_exception_record_shows_class_message_code_and_trace(): void
    {
        $r = fork(function () {
            throw new \RuntimeException('payment gateway said 503', 503);
        })->wait();
        $out = print_r($r->exception(), true);

        $this->assertStringStartsWith('Forklift\ExceptionRecord Object', $out);
        $this->assertStringContainsString('[className] => RuntimeException', $out);
        $this->assertStringContainsString('[message] => payment gateway said 503', $out);
        $this->assertStringContainsString('[code] => 503', $out);
        $this->assertStringContainsString('[file] => ' . __FILE__, $out);
        $this->assertStringContainsString('[trace] => #0 ', $out);
        $this->assertStringContainsString('[previous] => ' . "\n", $out, 'no previous exception');
    }

    public function test_var_dump_of_a_running_task_shows_its_id_without_blocking_and_then_its_result(): void
    {
        $pair = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
        $this->assertIsArray($pair);
        array_push($this->sockets, ...$pair);
        [$release, $workerEnd] = $pair;
        $pool = $this->pool = new Pool(fn (string $name) => $name . ' after ' . trim((string) fgets($workerEnd)), workers: 1);
        $task = $pool->submit('invoice 1042');

        // The worker is blocked on the socket: dumping the task must return at once.
        $dump = $this->varDump($task);
        $this->assertStringStartsWith('object(Forklift\Task)', $dump);
        $this->assertStringContainsString("[\"id\"]=>\n  int({$task->id()})", $dump);
        $this->assertStringContainsString("[\"done\"]=>\n  bool(false)", $dump);
        $this->assertStringContainsString("[\"result\"]=>\n  NULL", $dump);

        fwrite($release, "go\n");
        $task->wait();
        $out = print_r($task, true);
        $this->assertStringStartsWith('Forklift\Task Object', $out);
        $this->assertStringContainsString("[id] => {$task->id()}\n", $out);
        $this->assertStringContainsString("[done] => 1\n", $out);
        $this->assertStringContainsString('[result] => Forklift\JobResult Object', $out);
        $this->assertStringContainsString('[value] => invoice 1042 after go', $out);
    }

    public function test_dumping_a_task_only_reads_what_the_pool_has_collected_and_does_not_run_the_pool(): void
    {
        $pool = $this->pool = new Pool(fn (int $n) => $n * 2, workers: 1);
        $task = $pool->submit(21);
        // The worker answers within this time, but only a pool call (isDone, wait, ...) collects it.
        usleep(300_000);
        $this->assertStringContainsString("[done] => \n", print_r($task, true));
        $this->assertStringContainsString("[\"done\"]=>\n  bool(false)", $this->varDump($task));

        $this->assertTrue($task->wait()->ok());
        $this->assertStringContainsString("[\"done\"]=>\n  bool(true)", $this->varDump($task));
        $this->assertStringContainsString("[\"value\"]=>\n    int(42)", $this->varDump($task));
    }

    private function varDump(mixed $value): string
    {
        ob_start();
        try {
            var_dump($value);
        } finally {
            $out = ob_get_clean();
        }
        return $out;
    }
}
