<?php

namespace Forklift\Tests\Support;

/**
 * A throw-away beanstalkd on loopback. Needs Debian's beanstalkd; client() needs
 * php-pda-pheanstalk (Pheanstalk 4).
 *
 * No binlog (`-b`): the server lives for one test class and is never restarted, so jobs have
 * nothing to survive, and without it beanstalkd writes and fsyncs nothing.
 */
final class Beanstalkd extends LoopbackServer
{
    private const PHEANSTALK_AUTOLOAD = '/usr/share/php/Pheanstalk/autoload.php';

    public function __construct()
    {
        // Without LISTEN_PID/LISTEN_FDS: with them (systemd socket activation) it would ignore -l/-p.
        $env = array_diff_key(getenv(), ['LISTEN_PID' => 1, 'LISTEN_FDS' => 1, 'LISTEN_FDNAMES' => 1]);
        $this->start('/usr/bin/beanstalkd', 'beanstalkd', static fn (string $dir, int $port) => [
            '/usr/bin/beanstalkd', '-l', '127.0.0.1', '-p', (string) $port,
        ], $env);
    }

    /** `stats` answered with `OK <bytes>` (plain protocol: no Pheanstalk needed). */
    protected function answers(): bool
    {
        $line = $this->ask("stats\r\n");
        return is_string($line) && preg_match('/^OK \d+\r\n$/', $line) === 1;
    }

    public function dsn(): string
    {
        return "beanstalkd://127.0.0.1:$this->port";
    }

    /** A new Pheanstalk 4 connection to the server (it connects on its first command). */
    public function client(): \Pheanstalk\Pheanstalk
    {
        if (!class_exists(\Pheanstalk\Pheanstalk::class)) {
            if (!is_file(self::PHEANSTALK_AUTOLOAD)) {
                throw new \RuntimeException(self::PHEANSTALK_AUTOLOAD . ' is missing: install Debian\'s php-pda-pheanstalk');
            }
            require_once self::PHEANSTALK_AUTOLOAD;
        }
        return \Pheanstalk\Pheanstalk::create('127.0.0.1', $this->port);
    }
}
