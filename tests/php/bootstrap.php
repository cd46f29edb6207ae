<?php

// Test support shared by the suites; no autoloader is needed for it.
require __DIR__ . '/Support/Procfs.php';
require __DIR__ . '/Support/OwnChannel.php';
require __DIR__ . '/Support/Subprocess.php';
require __DIR__ . '/Support/SocketPairs.php';
require __DIR__ . '/Support/DaemonKit.php';
require dirname(__DIR__, 2) . '/php/autoload.php';
require __DIR__ . '/Support/LoopbackServer.php';
require __DIR__ . '/Support/MariaDb.php';
require __DIR__ . '/Support/Redis.php';
require __DIR__ . '/Support/Beanstalkd.php';
