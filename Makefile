EXT := $(CURDIR)/target/release/libforklift.so
PHP := php -d extension=$(EXT)

.PHONY: setup build test bench chaos demo fmt

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

demo: setup
	$(PHP) demo/demo.php

fmt:
	cargo fmt --all
