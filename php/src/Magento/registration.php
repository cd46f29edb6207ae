<?php

/**
 * Forklift_Cron: Magento's cron run by a Forklift daemon (see docs/magento.md).
 */

use Magento\Framework\Component\ComponentRegistrar;

// Loaded by Composer's "files" autoload in every project; only Magento has a registrar.
if (class_exists(ComponentRegistrar::class)) {
    ComponentRegistrar::register(ComponentRegistrar::MODULE, 'Forklift_Cron', __DIR__);
}
