EXT := $(CURDIR)/target/release/libforklift.so
PHP := php -d extension=$(EXT)

.PHONY: setup build test bench chaos demo demo-fork fmt

setup:
	scripts/setup.sh

build:
	cargo build --release

test: setup
	cargo test --release --lib
	cargo test --release --test process -- --test-threads=1
	$(PHP) /usr/bin/phpunit -c tests/php/phpunit.xml

bench: setup
	bench/run.sh

# 10 000 pool tasks of which ~10 % die at random (make test runs 2 000).
chaos: setup
	FORKLIFT_CHAOS_TASKS=10000 $(PHP) /usr/bin/phpunit -c tests/php/phpunit.xml tests/php/ChaosTest.php

# A daemon runs Magento-style cron jobs from cron_schedule on SQLite for ~30 s (var/demo.sqlite).
demo: setup
	demo/run.sh

# Six jobs forked at once, each ending a different way, and what the parent learns.
demo-fork: setup
	$(PHP) demo/fork.php

fmt:
	cargo fmt --all
