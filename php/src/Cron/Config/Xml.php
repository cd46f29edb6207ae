<?php

declare(strict_types=1);

namespace Forklift\Cron\Config;

/**
 * Loading Magento's XML configuration files safely, with errors that name the file.
 *
 * @internal used by Magento1Reader and Magento2Reader
 */
final class Xml
{
    /**
     * The `<config>` root element of `$file`, or null when the file cannot be used (the reason is
     * added to `$findings`). No network, no DTD: a file with a DOCTYPE is refused, so no entity
     * is ever expanded.
     */
    public static function root(string $file, Findings $findings): ?\DOMElement
    {
        if (!is_file($file) || !is_readable($file)) {
            $findings->error("$file: cannot read the file (missing or not readable); fix the path or its permissions");
            return null;
        }
        $text = file_get_contents($file);
        if ($text === false) {
            $findings->error("$file: cannot read the file; check its permissions");
            return null;
        }
        if (trim($text) === '') {
            $findings->error("$file: the file is empty; give it a <config> root element or leave the file out");
            return null;
        }
        $previous = libxml_use_internal_errors(true);
        libxml_clear_errors();
        try {
            $doc = new \DOMDocument();
            $loaded = $doc->loadXML($text, LIBXML_NONET);
            $problems = [];
            foreach (libxml_get_errors() as $e) {
                if ($e->level === LIBXML_ERR_FATAL && count($problems) < 3) {
                    $problems[] = sprintf('line %d: %s', $e->line, trim($e->message));
                }
            }
            libxml_clear_errors();
        } finally {
            libxml_use_internal_errors($previous);
        }
        // Only what stops the parser, as Magento's Config\Dom: an undeclared namespace prefix
        // (xsi:noNamespaceSchemaLocation without xmlns:xsi) is an error libxml recovers from.
        if (!$loaded) {
            $findings->error(sprintf(
                '%s: malformed XML (%s); fix the XML',
                $file,
                $problems === [] ? 'unreadable document' : implode('; ', $problems)
            ));
            return null;
        }
        if ($doc->doctype !== null) {
            $findings->error("$file: has a <!DOCTYPE>, which Magento's configuration files never have; remove it");
            return null;
        }
        $root = $doc->documentElement;
        if ($root === null || $root->localName !== 'config') {
            $findings->error(sprintf(
                '%s: the root element is <%s>, expected <config>; is this the right file?',
                $file,
                $root === null ? '' : $root->nodeName
            ));
            return null;
        }
        return $root;
    }

    /**
     * The child elements of `$node`, in document order (text, comments and CDATA between them
     * are skipped).
     *
     * @return list<\DOMElement>
     */
    public static function children(\DOMNode $node): array
    {
        $out = [];
        foreach ($node->childNodes as $child) {
            if ($child instanceof \DOMElement) {
                $out[] = $child;
            }
        }
        return $out;
    }

    /** The first child element of `$node` named `$name`, or null. */
    public static function child(\DOMNode $node, string $name): ?\DOMElement
    {
        foreach (self::children($node) as $child) {
            if ($child->localName === $name) {
                return $child;
            }
        }
        return null;
    }

    /**
     * The elements reached from `$node` by the child names `$names`, all of them when names
     * repeat (`all($root, 'crontab', 'jobs')` is every `<config><crontab><jobs>`).
     *
     * @return list<\DOMElement>
     */
    public static function all(\DOMNode $node, string ...$names): array
    {
        $level = [$node];
        foreach ($names as $name) {
            $next = [];
            foreach ($level as $n) {
                foreach (self::children($n) as $child) {
                    if ($child->localName === $name) {
                        $next[] = $child;
                    }
                }
            }
            $level = $next;
        }
        return $level;
    }

    /** A whole number of minutes from 1 to 525600 (a year) as Forklift\Cron\Group takes it, or null. */
    public static function minutes(string $text): ?int
    {
        if (preg_match('/^\+?0*([0-9]{1,6})$/', trim($text), $m) !== 1) {
            return null;
        }
        $n = (int) $m[1];
        return $n >= 1 && $n <= 525600 ? $n : null;
    }
}
