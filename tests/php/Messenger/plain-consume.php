<?php

// Symfony Messenger's own worker (what messenger:consume runs) on the tests' application: to
// show that forklift:stop-workers stops it too (the restart signal). Says "ready" on stderr.

declare(strict_types=1);

$app = require __DIR__ . '/app.php';
$app->events->addListener(Symfony\Component\Messenger\Event\WorkerStartedEvent::class, static function (): void {
    fwrite(STDERR, 'ready ' . getmypid() . "\n");
});
(new Symfony\Component\Messenger\Worker(['plain' => $app->receivers['plain']], $app->bus, $app->events))->run(['sleep' => 50000]);
fwrite(STDERR, "stopped\n");
