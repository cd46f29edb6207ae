<?php

declare(strict_types=1);

namespace Forklift\Cron;

/**
 * A cron expression that Forklift\Cron\Expression refuses.
 *
 * The message names the expression, the field that is wrong (when one is) and
 * what that field allows. The same details are kept in properties for callers
 * that report them elsewhere, e.g. next to a Magento job code.
 */
final class InvalidExpressionException extends \InvalidArgumentException
{
    /**
     * @param string      $expression the expression as given
     * @param string|null $field      "minute", "hour", "day-of-month", "month", "day-of-week", or null when
     *                                the expression as a whole is wrong (number of fields)
     */
    public function __construct(
        string $message,
        public readonly string $expression,
        public readonly ?string $field = null,
    ) {
        parent::__construct($message);
    }
}
