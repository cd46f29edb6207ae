EXT := $(CURDIR)/target/release/libforklift.so
PHP := php -d extension=$(EXT)

.PHONY: setup build test bench demo fmt

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

demo: setup
	$(PHP) demo/demo.php

fmt:
	cargo fmt --all
