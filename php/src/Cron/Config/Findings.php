<?php

declare(strict_types=1);

namespace Forklift\Cron\Config;

/**
 * What a reader found wrong while reading (errors) or worth saying (warnings).
 *
 * @internal used by Magento1Reader and Magento2Reader
 */
final class Findings
{
    /** @var list<string> */
    public array $errors = [];
    /** @var list<string> */
    public array $warnings = [];

    public function error(string $message): void
    {
        $this->errors[] = $message;
    }

    public function warn(string $message): void
    {
        $this->warnings[] = $message;
    }

    /**
     * A job's callable from the reader's factory; null (and an error naming the job, and
     * `$cannotHint` or `$notCallableHint` as what to fix) when the factory throws or gives
     * something that is not callable.
     */
    public function make(
        \Closure $factory,
        string $class,
        string $method,
        string $where,
        string $about,
        string $cannotHint,
        string $notCallableHint,
    ): ?callable {
        try {
            $run = $factory($class, $method);
        } catch (\Throwable $e) {
            $this->error(sprintf('%s: %s: cannot make %s::%s(): %s; %s', $where, $about, $class, $method, $e->getMessage(), $cannotHint));
            return null;
        }
        if (!is_callable($run)) {
            $this->error(sprintf(
                '%s: %s: the factory gave %s for %s::%s(), not a callable; %s',
                $where,
                $about,
                get_debug_type($run),
                $class,
                $method,
                $notCallableHint
            ));
            return null;
        }
        return $run;
    }

    /**
     * The reader's answer: in strict mode, a ConfigException naming every error if there is one.
     *
     * @param list<\Forklift\Cron\Group> $groups
     * @param list<\Forklift\Cron\Job>   $jobs
     * @return array{groups: list<\Forklift\Cron\Group>, jobs: list<\Forklift\Cron\Job>, errors: list<string>, warnings: list<string>}
     * @throws ConfigException
     */
    public function result(array $groups, array $jobs, bool $strict): array
    {
        if ($strict && $this->errors !== []) {
            throw new ConfigException($this->errors);
        }
        return ['groups' => $groups, 'jobs' => $jobs, 'errors' => $this->errors, 'warnings' => $this->warnings];
    }
}
