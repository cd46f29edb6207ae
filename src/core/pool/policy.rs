//! The pool's timing policies: backoff after workers die at start, and the jitter that keeps
//! workers from being recycled all at once.

use std::time::Duration;

/// First wait before forking again after a worker died at start; doubles each time.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The wait before the next fork after `failures` workers in a row died at start (1 or more).
pub fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(10);
    (BACKOFF_FIRST * factor).min(BACKOFF_MAX)
}

/// A small xorshift generator: jitter needs spread, not quality.
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed | 1)
    }

    /// A number from 0 to a tenth of `of` (0 for `of` under 10).
    pub fn tenth_of(&mut self, of: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if of < 10 {
            0
        } else {
            self.0 % (of / 10 + 1)
        }
    }

    /// `d` less up to 10 %.
    pub fn shorten(&mut self, d: Duration) -> Duration {
        let ms = d.as_millis() as u64;
        d - Duration::from_millis(self.tenth_of(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_50ms_up_to_5s() {
        assert_eq!(backoff(1), Duration::from_millis(50));
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(4), Duration::from_millis(400));
        assert_eq!(backoff(8), Duration::from_secs(5));
        assert_eq!(backoff(60), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_within_a_tenth() {
        let mut j = Jitter::new(12345);
        for _ in 0..1000 {
            assert!(j.tenth_of(500) <= 50);
            assert_eq!(j.tenth_of(9), 0);
            let d = j.shorten(Duration::from_secs(10));
            assert!(d >= Duration::from_secs(9) && d <= Duration::from_secs(10));
        }
    }
}
