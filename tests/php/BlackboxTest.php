<?php

declare(strict_types=1);

namespace Forklift\Tests;

use Forklift\Blackbox;
use Forklift\ErrorRecord;
use PHPUnit\Framework\TestCase;

use function Forklift\fork;

/** The blackbox: every error a job raises reaches the parent, as structured records. */
final class BlackboxTest extends TestCase
{
    public function test_notices_warnings_and_deprecations_arrive_in_order_with_file_and_line(): void
    {
        $line = __LINE__ + 3;
        $r = fork(function () {
            set_error_handler(null);
            trigger_error('a notice', E_USER_NOTICE);
            trigger_error('a warning', E_USER_WARNING);
            trigger_error('a deprecation', E_USER_DEPRECATED);
            $undefined = [];
            return $undefined['missing'] ?? 'fallback' . $undefinedVariable;
        })->wait();
        $this->assertSame('ok', $r->outcome(), 'errors that do not stop PHP leave the job ok');
        $levels = array_map(fn (ErrorRecord $e) => $e->levelName(), $r->errors());
        $this->assertSame(['E_USER_NOTICE', 'E_USER_WARNING', 'E_USER_DEPRECATED', 'E_WARNING'], $levels);
        $first = $r->errors()[0];
        $this->assertSame('a notice', $first->message());
        $this->assertSame(__FILE__, $first->file());
        $this->assertSame($line, $first->line());
        $this->assertSame(E_USER_NOTICE, $first->level());
        $this->assertFalse($first->isFatal());
        $this->assertSame([], $first->trace(), 'only fatal errors carry a trace');
        $this->assertSame('Undefined variable $undefinedVariable', $r->errors()[3]->message());
        $this->assertSame("E_USER_NOTICE: a notice in " . __FILE__ . ":$line", (string) $first);
    }

    public function test_errors_before_a_fatal_error_are_kept_and_the_fatal_one_is_last(): void
    {
        $r = fork(function () {
            set_error_handler(null);
            trigger_error('first', E_USER_WARNING);
            trigger_error('second', E_USER_WARNING);
            undefined_function_for_a_fatal_error();
        })->wait();
        // Calling an undefined function throws an Error in PHP 8: an exception outcome, errors kept.
        $this->assertSame('exception', $r->outcome());
        $this->assertSame(\Error::class, $r->exception()->className());
        $this->assertSame(['first', 'second'], array_map(fn ($e) => $e->message(), $r->errors()));
    }

    public function test_records_sent_before_a_sigkill_are_kept(): void
    {
        $r = fork(function () {
            set_error_handler(null);
            for ($i = 0; $i < 100; $i++) {
                trigger_error("record $i", E_USER_NOTICE);
            }
            posix_kill(getmypid(), SIGKILL);
        })->wait();
        $this->assertSame('signal', $r->outcome());
        $this->assertCount(100, $r->errors());
        $this->assertSame('record 99', $r->errors()[99]->message());
    }

    public function test_silenced_and_unreported_errors_are_not_recorded_but_fatal_ones_always_are(): void
    {
        $r = fork(function () {
            set_error_handler(null);
            echo @$silenced;
            error_reporting(E_ALL & ~E_USER_NOTICE);
            trigger_error('filtered out', E_USER_NOTICE);
            trigger_error('kept', E_USER_WARNING);
            error_reporting(0);
            trigger_error('fatal despite error_reporting(0)', E_USER_ERROR);
        })->wait();
        $this->assertSame('fatal', $r->outcome());
        $this->assertSame(
            ['kept', 'fatal despite error_reporting(0)'],
            array_map(fn ($e) => $e->message(), $r->errors())
        );
    }

    public function test_a_user_error_handler_still_runs_and_the_blackbox_still_records(): void
    {
        $r = fork(function () {
            $seen = [];
            set_error_handler(function (int $level, string $message) use (&$seen) {
                $seen[] = $message;
                return true; // handled: PHP's own handler does not run
            });
            trigger_error('handled warning', E_USER_WARNING);
            trigger_error('handled error', E_USER_ERROR); // a handler that returns true keeps the script alive
            return $seen;
        })->wait();
        $this->assertSame('ok', $r->outcome());
        $this->assertSame(['handled warning', 'handled error'], $r->value());
        $this->assertSame(['handled warning', 'handled error'], array_map(fn ($e) => $e->message(), $r->errors()));
    }

    public function test_a_handler_that_turns_warnings_into_exceptions_gives_both_record_and_exception(): void
    {
        $r = fork(function () {
            set_error_handler(function (int $level, string $message, string $file, int $line) {
                throw new \ErrorException($message, 0, $level, $file, $line);
            });
            file_get_contents('/nonexistent/forklift');
        })->wait();
        $this->assertSame('exception', $r->outcome());
        $this->assertSame(\ErrorException::class, $r->exception()->className());
        $this->assertStringContainsString('Failed to open stream', $r->exception()->message());
        $this->assertStringContainsString('Failed to open stream', $r->errors()[0]->message());
    }

    public function test_capture_collects_the_errors_raised_in_process(): void
    {
        $previous = set_error_handler(null);
        try {
            $line = __LINE__ + 2;
            $records = Blackbox::capture(function () {
                trigger_error('deprecated call', E_USER_DEPRECATED);
                echo @$silenced;
                $inner = Blackbox::capture(fn () => trigger_error('nested', E_USER_NOTICE));
                return $inner;
            });
        } finally {
            set_error_handler($previous);
        }
        $this->assertSame(['deprecated call', 'nested'], array_map(fn ($e) => $e->message(), $records));
        $this->assertSame($line, $records[0]->line());
        $this->assertSame('E_USER_DEPRECATED', $records[0]->levelName());
    }

    public function test_capture_lets_an_exception_through_and_records_nothing_after(): void
    {
        try {
            Blackbox::capture(fn () => throw new \UnexpectedValueException('bad row'));
            $this->fail('the exception must propagate');
        } catch (\UnexpectedValueException $e) {
            $this->assertSame('bad row', $e->getMessage());
        }
        $previous = set_error_handler(null);
        trigger_error('outside any capture', E_USER_NOTICE);
        set_error_handler($previous);
        $this->assertSame([], Blackbox::capture(fn () => 1));
    }

    public function test_capture_returns_nothing_when_nothing_went_wrong(): void
    {
        $this->assertSame([], Blackbox::capture(fn () => strlen('fine')));
    }
}
