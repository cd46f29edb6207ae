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
