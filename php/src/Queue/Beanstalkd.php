<?php

declare(strict_types=1);

namespace Forklift\Queue;

use Forklift\InvalidArgumentException;
use Pheanstalk\Connection;
use Pheanstalk\Exception\DeadlineSoonException;
use Pheanstalk\Exception\JobNotFoundException;
use Pheanstalk\JobId;
use Pheanstalk\Pheanstalk;
use Pheanstalk\SocketFactory;

/**
 * A beanstalkd tube through Pheanstalk 4 (Debian's php-pda-pheanstalk): reserve, touch while a
 * handler runs past half the job's TTR, delete on success, release with a delay to retry, bury
 * to set aside (`kick` brings buried jobs back). beanstalkd counts the reserves of each job,
 * which are the attempts: a consumer killed mid-message counts as one.
 *
 * beanstalkd ties a reservation to the connection that made it: when that connection closes,
 * the server releases the job at once. So the consumer keeps its one connection open across
 * forks (closing it before each fork would hand running jobs to other consumers); a child that
 * inherits it {@see abandon()}s it instead. It does not put jobs for producers beyond {@see put()}.
 */
final class Beanstalkd implements Broker
{
    private const AUTOLOAD = '/usr/share/php/Pheanstalk/autoload.php';

    private ?Pheanstalk $client = null;
    private ?Connection $connection = null;
    /** @var array<string, float> when each reserved job was last reserved or touched, by job id */
    private array $touched = [];
    /** @var list<object> connections inherited by a forked child: kept, never used nor closed */
    private static array $abandoned = [];

    /**
     * @param string $tube           the tube to watch and put into (1 to 200 of A-Z a-z 0-9 - + / ; . $ _ ( ), not first '-')
     * @param int    $connectTimeout seconds
     */
    public function __construct(
        private readonly string $host = '127.0.0.1',
        private readonly int $port = 11300,
        private readonly string $tube = 'default',
        private readonly int $connectTimeout = 10,
    ) {
        $what = 'Forklift\\Queue\\Beanstalkd';
        if ($host === '') {
            throw new InvalidArgumentException("$what: \$host is empty; give the server's address, as '127.0.0.1'");
        }
        if ($port < 1 || $port > 65535) {
            throw new InvalidArgumentException("$what: \$port must be 1 to 65535 (beanstalkd listens on 11300 by default), $port given");
        }
        if (!preg_match('/^[A-Za-z0-9+\/;.$_()][A-Za-z0-9+\/;.$_()-]{0,199}$/', $tube)) {
            throw new InvalidArgumentException("$what: \$tube \"$tube\" is not a beanstalkd tube name: 1 to 200 of A-Z a-z 0-9 - + / ; . \$ _ ( ), not starting with '-'");
        }
        if ($connectTimeout < 1) {
            throw new InvalidArgumentException("$what: \$connectTimeout must be 1 second or more, $connectTimeout given");
        }
        if (!class_exists(Pheanstalk::class)) {
            if (!is_file(self::AUTOLOAD)) {
                throw new InvalidArgumentException("$what needs Pheanstalk 4: install Debian's php-pda-pheanstalk (" . self::AUTOLOAD . ') or require pda/pheanstalk:^4 with Composer');
            }
            require_once self::AUTOLOAD;
        }
    }

    /** Puts a job into the tube (for producers and tests); returns its id. `$ttr`: seconds a consumer may hold it between touches. */
    public function put(string $body, int $delay = 0, int $ttr = 60, int $priority = 1024): string
    {
        return (string) $this->client()->put($body, $priority, $delay, $ttr)->getId();
    }

    /** Waits in whole seconds (beanstalkd's unit; rounded up); 0 does not wait. */
    public function receive(float $wait = 0.0): ?Message
    {
        try {
            $job = $this->client()->reserveWithTimeout((int) ceil(max(0.0, $wait)));
        } catch (DeadlineSoonException) {
            // One of our jobs is within a second of its TTR: the keep-alive is late. Touch now;
            // the next receive reserves.
            foreach (array_keys($this->touched) as $id) {
                $this->touch((string) $id);
            }

            return null;
        }
        if ($job === null) {
            return null;
        }
        $id = (string) $job->getId();
        $stats = $this->client()->statsJob($job);
        $this->touched[$id] = microtime(true);

        return new Message($id, $job->getData(), (int) $stats['reserves'], ['ttr' => (int) $stats['ttr'], 'priority' => (int) $stats['pri']]);
    }

    public function ack(Message $message): void
    {
        unset($this->touched[$message->id]);
        $this->client()->delete(new JobId((int) $message->id));
    }

    /** Releases with the delay in whole seconds (rounded up). */
    public function retry(Message $message, float $delay, string $cause): void
    {
        unset($this->touched[$message->id]);
        $this->client()->release(new JobId((int) $message->id), $message->data['priority'] ?? 1024, (int) ceil(max(0.0, $delay)));
    }

    /** Buries the job; beanstalkd keeps no reason, so the consumer logs and counts `$cause`. */
    public function bury(Message $message, string $cause): void
    {
        unset($this->touched[$message->id]);
        $this->client()->bury(new JobId((int) $message->id), $message->data['priority'] ?? 1024);
    }

    public function keepAlive(Message $message): bool
    {
        $last = $this->touched[$message->id] ?? null;
        if ($last === null) {
            return false;
        }
        if (microtime(true) - $last < ($message->data['ttr'] ?? 1) / 2) {
            return true;
        }

        return $this->touch($message->id);
    }

    /** Closes the connection: beanstalkd releases every job reserved on it. */
    public function close(): void
    {
        $this->connection?->disconnect();
        $this->connection = null;
        $this->client = null;
        $this->touched = [];
    }

    public function abandon(): void
    {
        if ($this->connection !== null) {
            // Not disconnect(): the socket is the parent's too. Kept until the child exits.
            self::$abandoned[] = $this->connection;
        }
        $this->connection = null;
        $this->client = null;
        $this->touched = [];
    }

    public function describe(): string
    {
        return "beanstalkd $this->host:$this->port tube $this->tube";
    }

    private function touch(string $id): bool
    {
        try {
            $this->client()->touch(new JobId((int) $id));
        } catch (JobNotFoundException) {
            // Its TTR passed (or it was deleted): the server gave it to someone else.
            unset($this->touched[$id]);

            return false;
        }
        $this->touched[$id] = microtime(true);

        return true;
    }

    private function client(): Pheanstalk
    {
        if ($this->client === null) {
            $this->connection = new Connection(new SocketFactory($this->host, $this->port, $this->connectTimeout));
            $client = new Pheanstalk($this->connection);
            $client->useTube($this->tube);
            $client->watchOnly($this->tube);
            $this->client = $client;
        }

        return $this->client;
    }
}
