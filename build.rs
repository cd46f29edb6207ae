//! Reads `php-config` (or `$PHP_CONFIG`) and refuses a PHP that Forklift does not support, before
//! ext-php-rs's own build fails in a less helpful way. Sets `cfg(php82)` for version-specific code.

use std::process::Command;

/// Supported PHP versions, as PHP_VERSION_ID ranges [from, to).
const SUPPORTED: (u32, u32) = (80200, 80300);

fn main() {
    println!("cargo:rerun-if-env-changed=PHP_CONFIG");
    println!("cargo:rustc-check-cfg=cfg(php82)");
    let php_config = std::env::var("PHP_CONFIG").unwrap_or_else(|_| "php-config".into());
    let output = match Command::new(&php_config).arg("--vernum").output() {
        Ok(o) if o.status.success() => o,
        _ => fail(&format!(
            "`{php_config} --vernum` did not run. Install PHP's development files (Debian: \
             apt-get install php8.2-dev, or run `make setup`), or point PHP_CONFIG at php-config."
        )),
    };
    let vernum: u32 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let version = format!("{}.{}.{}", vernum / 10000, vernum / 100 % 100, vernum % 100);
    if !(SUPPORTED.0..SUPPORTED.1).contains(&vernum) {
        fail(&format!(
            "{php_config} reports PHP {version}; Forklift supports PHP 8.2. Install php8.2-dev and \
             set PHP_CONFIG=/usr/bin/php-config8.2 (or run `make setup`)."
        ));
    }
    println!("cargo:rustc-cfg=php82");
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    println!("cargo:warning={message}");
    std::process::exit(1);
}
