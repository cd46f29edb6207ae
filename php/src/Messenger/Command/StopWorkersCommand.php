<?php

declare(strict_types=1);

namespace Forklift\Messenger\Command;

use Forklift\Daemon;
use Forklift\ForkliftException;
use Forklift\Messenger\Consumers;
use Psr\Cache\CacheItemPoolInterface;
use Symfony\Component\Console\Command\Command;
use Symfony\Component\Console\Exception\InvalidOptionException;
use Symfony\Component\Console\Input\InputInterface;
use Symfony\Component\Console\Input\InputOption;
use Symfony\Component\Console\Output\ConsoleOutputInterface;
use Symfony\Component\Console\Output\OutputInterface;
use Symfony\Component\Console\Style\SymfonyStyle;
use Symfony\Component\Messenger\EventListener\StopWorkerOnRestartSignalListener;

/**
 * `forklift:stop-workers [--wait]`: sets Messenger's restart signal (plain `messenger:consume`
 * workers stop after their current message) and sends TERM to this host's Forklift consumers
 * (their running messages finish, up to their stop timeout); with `--wait`, returns only once
 * those have exited (exit code 1 if some are still running at `--timeout`).
 */
class StopWorkersCommand extends Command
{
    protected static $defaultName = 'forklift:stop-workers';
    protected static $defaultDescription = 'Stop workers after their current message; with --wait, return once Forklift consumers have exited';

    public function __construct(
        private readonly ?CacheItemPoolInterface $restartSignalCachePool = null,
        private readonly ?string $runDir = null,
    ) {
        parent::__construct();
    }

    protected function configure(): void
    {
        $this->addOption('wait', null, InputOption::VALUE_NONE, 'Return only when the Forklift consumers of this host have exited');
        $this->addOption('timeout', null, InputOption::VALUE_REQUIRED, 'With --wait: give up after this many seconds (exit code 1)', 120);
    }

    protected function execute(InputInterface $input, OutputInterface $output): int
    {
        $io = new SymfonyStyle($input, $output instanceof ConsoleOutputInterface ? $output->getErrorOutput() : $output);
        $timeout = $input->getOption('timeout');
        if (!is_numeric($timeout) || (float) $timeout <= 0) {
            throw new InvalidOptionException(sprintf('Option "timeout" must be a number of seconds more than 0, "%s" passed.', $timeout));
        }
        if ($this->restartSignalCachePool !== null) {
            $item = $this->restartSignalCachePool->getItem(StopWorkerOnRestartSignalListener::RESTART_REQUESTED_TIMESTAMP_KEY);
            $item->set(microtime(true));
            $this->restartSignalCachePool->save($item);
            $io->success('Signal successfully sent to stop any running workers.');
        }
        $consumers = Consumers::running($this->runDir);
        $signalled = [];
        foreach ($consumers as $pidFile) {
            try {
                Daemon::signalRunning($pidFile, \SIGTERM, wait: false);
                $signalled[] = $pidFile;
            } catch (ForkliftException $e) {
                // Ended meanwhile, or not ours to signal: said, not fatal.
                $io->note($e->getMessage());
            }
        }
        $io->text(sprintf('Forklift consumers asked to stop: %d', \count($signalled)));
        if (!$input->getOption('wait')) {
            return 0;
        }
        $deadline = microtime(true) + (float) $timeout;
        $left = [];
        foreach ($signalled as $pidFile) {
            try {
                if (!Daemon::signalRunning($pidFile, \SIGTERM, wait: true, timeout: max(0.0, $deadline - microtime(true)))) {
                    $left[] = $pidFile;
                }
            } catch (ForkliftException) {
                // Not running any more: that is what we wait for.
            }
        }
        if ($left !== []) {
            $io->error(sprintf('Still running after %s s: %s', $timeout, implode(', ', $left)));

            return 1;
        }
        $io->success(sprintf('%d Forklift consumer(s) stopped.', \count($signalled)));

        return 0;
    }
}
