<?php

declare(strict_types=1);

namespace Forklift\Magento\Console;

use Symfony\Component\Console\Command\Command;
use Symfony\Component\Console\Input\InputInterface;
use Symfony\Component\Console\Input\InputOption;
use Symfony\Component\Console\Output\OutputInterface;

/**
 * `bin/magento forklift:cron`: replaces this process with `bin/forklift run` on the Magento daemon
 * file (daemon.php beside this module). The supervisor must not carry the application that
 * bin/magento has loaded, so this command does not run the daemon itself: it execs a fresh PHP.
 */
final class CronCommand extends Command
{
    protected function configure(): void
    {
        $this->setName('forklift:cron')
            ->setDescription("Runs Magento's cron (cron_schedule) with a Forklift daemon instead of crontab + cron:run")
            ->addOption('daemonize', null, InputOption::VALUE_NONE, 'detach (new session, log to --log)')
            ->addOption('log', null, InputOption::VALUE_REQUIRED, 'with --daemonize: the log file');
    }

    protected function execute(InputInterface $input, OutputInterface $output): int
    {
        if (!function_exists('pcntl_exec')) {
            $output->writeln('<error>forklift:cron needs ext-pcntl to start bin/forklift</error>');
            return 1;
        }
        $forklift = self::forkliftBinary();
        if ($forklift === null) {
            $output->writeln('<error>bin/forklift not found: install forklift/forklift or set FORKLIFT_BIN</error>');
            return 1;
        }
        $args = [$forklift, 'run', dirname(__DIR__) . '/daemon.php'];
        if ($input->getOption('daemonize')) {
            $args[] = '--daemonize';
            if ($input->getOption('log') !== null) {
                $args[] = '--log=' . $input->getOption('log');
            }
        }
        putenv('MAGENTO_ROOT=' . BP);
        pcntl_exec(PHP_BINARY, $args);
        $output->writeln("<error>could not start $forklift</error>");
        return 1;
    }

    private static function forkliftBinary(): ?string
    {
        $candidates = array_filter([
            getenv('FORKLIFT_BIN') ?: null,
            dirname(__DIR__, 3) . '/bin/forklift', // the repository / package layout
            defined('BP') ? BP . '/vendor/bin/forklift' : null,
        ]);
        foreach ($candidates as $c) {
            if (is_file($c)) {
                return $c;
            }
        }
        return null;
    }
}
