<?php

declare(strict_types=1);

namespace Forklift\Cron\Config;

/**
 * Magento cron configuration that cannot be run as written.
 *
 * Thrown by the readers in strict mode (the default) once every file has been read, so one
 * exception names every problem: each line of the message names the file, the job or group, and
 * what to fix. The same lines are in `$errors`. In lenient mode (`strict: false`) nothing is
 * thrown: the lines come back in the result's `errors` and the jobs that are fine are returned.
 */
final class ConfigException extends \InvalidArgumentException
{
    /**
     * @param list<string> $errors one line per problem; the message is these lines
     */
    public function __construct(public readonly array $errors)
    {
        parent::__construct(implode("\n", $errors));
    }
}
