<?php

// bin/console of the tests' Symfony application (see Kernel.php).

declare(strict_types=1);

require_once dirname(__DIR__) . '/autoload.php';
require_once '/usr/share/php/Symfony/Bundle/FrameworkBundle/autoload.php';
require_once __DIR__ . '/Kernel.php';

$kernel = new Forklift\Tests\Messenger\Kernel\Kernel('prod', false);
$application = new Symfony\Bundle\FrameworkBundle\Console\Application($kernel);
exit($application->run());
