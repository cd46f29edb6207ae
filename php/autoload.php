<?php

/**
 * PSR-4 autoloader for the PHP classes of Forklift: Forklift\ => php/src/.
 *
 * For the tests and for projects without Composer (with Composer, the
 * package's composer.json autoload does the same). It loads only classes
 * whose file exists here, so the classes the extension defines in the
 * Forklift\ namespace (Process, Pool, Daemon, ...) are left alone.
 *
 *     require_once '/path/to/forklift/php/autoload.php';
 */

declare(strict_types=1);

spl_autoload_register(static function (string $class): void {
    $prefix = 'Forklift\\';
    if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
        return;
    }
    $relative = substr($class, strlen($prefix));
    // Only plain class names: nothing that could climb out of src/.
    if (preg_match('/^[A-Za-z_][A-Za-z0-9_]*(?:\\\\[A-Za-z_][A-Za-z0-9_]*)*$/', $relative) !== 1) {
        return;
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', $relative) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
