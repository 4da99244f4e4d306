//! Failed sign-ins, counted per client address and per user name in a fixed window. Past the
//! limit, further attempts are refused without checking the secret until the window ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max_failures,
            window,
            failures: Mutex::default(),
        }
    }

    /// `Err(seconds)` to wait when any of `keys` is past its limit.
    pub fn check(&self, keys: &[&str]) -> Result<(), u64> {
        let now = Instant::now();
        let failures = self.failures.lock().unwrap();
        let wait = keys
            .iter()
            .filter_map(|key| failures.get(*key))
            .filter(|(count, since)| {
                *count >= self.max_failures && now.duration_since(*since) < self.window
            })
            .map(|(_, since)| (self.window - now.duration_since(*since)).as_secs().max(1))
            .max();
        match wait {
            Some(seconds) => Err(seconds),
            None => Ok(()),
        }
    }

    pub fn fail(&self, keys: &[&str]) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap();
        if failures.len() > 100_000 {
            failures.retain(|_, (_, since)| now.duration_since(*since) < self.window);
        }
        for key in keys {
            let entry = failures.entry((*key).to_owned()).or_insert((0, now));
            if now.duration_since(entry.1) >= self.window {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_until_the_window_ends() {
        let limiter = LoginLimiter::new(3, Duration::from_millis(200));
        for _ in 0..3 {
            assert_eq!(limiter.check(&["client:a", "user:x"]), Ok(()));
            limiter.fail(&["client:a", "user:x"]);
        }
        assert!(limiter.check(&["client:a"]).is_err());
        assert!(limiter.check(&["client:b", "user:x"]).is_err());
        assert_eq!(limiter.check(&["client:b", "user:y"]), Ok(()));
        std::thread::sleep(Duration::from_millis(220));
        assert_eq!(limiter.check(&["client:a", "user:x"]), Ok(()));
    }
}
