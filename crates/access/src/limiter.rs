//! Bounds on guessing and on the work guessing costs.
//!
//! `LoginLimiter` counts sign-ins per client address and per user name in a fixed window. A
//! password attempt is counted when it starts, in the same locked step that checks the limit, so
//! concurrent guesses cannot slip past it; an attempt that turns out right is taken back. The
//! client limit is hard. The name limit refuses only clients that have failed themselves, so a
//! flood of wrong guesses at a name slows the guessers without locking its owner out.
//!
//! `Hashing` lets a fixed number of argon2 runs go at once, each in memory it reuses, and makes
//! the rest wait a bounded time: a flood of sign-ins costs queued threads, not 19 MiB each.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use argon2::Block;

pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    counts: Mutex<HashMap<String, Count>>,
}

#[derive(Debug, Clone, Copy)]
struct Count {
    failures: u32,
    /// Attempts let through whose outcome is not known yet.
    pending: u32,
    since: Instant,
}

/// A password attempt let through, counted against its client and name until it ends: `fail`
/// keeps it counted as a failure; dropping it (the password matched, or could not be checked)
/// takes it back.
pub struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    keys: Vec<String>,
}

impl Attempt<'_> {
    pub fn fail(self) {
        self.limiter.settle(&self.keys, true);
        std::mem::forget(self);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.limiter.settle(&self.keys, false);
    }
}

fn keys(client: &str, user: Option<&str>) -> (String, Option<String>) {
    (
        format!("client:{client}"),
        user.map(|u| format!("user:{u}")),
    )
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max_failures,
            window,
            counts: Mutex::default(),
        }
    }

    /// The count of `key` in the current window.
    fn current(&self, counts: &HashMap<String, Count>, key: &str, now: Instant) -> Option<Count> {
        counts.get(key).map(|count| {
            if now.duration_since(count.since) >= self.window {
                Count {
                    failures: 0,
                    since: now,
                    ..*count
                }
            } else {
                *count
            }
        })
    }

    fn wait(&self, count: &Count, now: Instant) -> u64 {
        self.window
            .saturating_sub(now.duration_since(count.since))
            .as_secs()
            .max(1)
    }

    /// `Err(seconds)` when `client` may not try now, with the name `user` when it has one: the
    /// client is past its limit, or the name is and the client has failed too.
    fn refusal(
        &self,
        counts: &HashMap<String, Count>,
        client: &str,
        user: Option<&str>,
        now: Instant,
    ) -> Result<(), u64> {
        let (client_key, user_key) = keys(client, user);
        let client_count = self.current(counts, &client_key, now);
        if let Some(count) = &client_count
            && count.failures + count.pending >= self.max_failures
        {
            return Err(self.wait(count, now));
        }
        let client_failed = client_count.is_some_and(|c| c.failures > 0);
        if let Some(key) = &user_key
            && client_failed
            && let Some(count) = self.current(counts, key, now)
            && count.failures + count.pending >= self.max_failures
        {
            return Err(self.wait(&count, now));
        }
        Ok(())
    }

    /// Whether `client` may try now, without counting anything (for credentials already proved,
    /// and for token secrets, which no one can guess).
    pub fn check(&self, client: &str, user: Option<&str>) -> Result<(), u64> {
        let counts = self.counts.lock().unwrap();
        self.refusal(&counts, client, user, Instant::now())
    }

    /// Checks and counts one attempt in one step: of any number of concurrent attempts, no more
    /// than the limit get through.
    pub fn begin(&self, client: &str, user: Option<&str>) -> Result<Attempt<'_>, u64> {
        let now = Instant::now();
        let mut counts = self.counts.lock().unwrap();
        self.refusal(&counts, client, user, now)?;
        let (client_key, user_key) = keys(client, user);
        let keys: Vec<String> = std::iter::once(client_key).chain(user_key).collect();
        for key in &keys {
            let count = self.entry(&mut counts, key, now);
            count.pending += 1;
        }
        Ok(Attempt {
            limiter: self,
            keys,
        })
    }

    /// Counts a failure of `client` at once (a wrong token secret).
    pub fn fail(&self, client: &str) {
        let now = Instant::now();
        let mut counts = self.counts.lock().unwrap();
        self.entry(&mut counts, &keys(client, None).0, now).failures += 1;
    }

    fn entry<'c>(
        &self,
        counts: &'c mut MutexGuard<'_, HashMap<String, Count>>,
        key: &str,
        now: Instant,
    ) -> &'c mut Count {
        if counts.len() > 100_000 {
            let window = self.window;
            counts.retain(|_, c| c.pending > 0 || now.duration_since(c.since) < window);
        }
        let count = counts.entry(key.to_owned()).or_insert(Count {
            failures: 0,
            pending: 0,
            since: now,
        });
        if now.duration_since(count.since) >= self.window {
            count.failures = 0;
            count.since = now;
        }
        count
    }

    fn settle(&self, keys: &[String], failed: bool) {
        let now = Instant::now();
        let mut counts = self.counts.lock().unwrap();
        for key in keys {
            let count = self.entry(&mut counts, key, now);
            count.pending = count.pending.saturating_sub(1);
            if failed {
                count.failures += 1;
            }
        }
    }
}

/// At most `permits` argon2 runs at once, each in a block buffer kept for the next one; others
/// wait up to `wait` for their turn.
pub struct Hashing {
    buffers: Mutex<Vec<Vec<Block>>>,
    freed: Condvar,
    wait: Duration,
}

/// A turn to run argon2, with the memory to run it in.
pub struct HashingTurn<'a> {
    hashing: &'a Hashing,
    pub memory: Vec<Block>,
}

impl Drop for HashingTurn<'_> {
    fn drop(&mut self) {
        let memory = std::mem::take(&mut self.memory);
        self.hashing.buffers.lock().unwrap().push(memory);
        self.hashing.freed.notify_one();
    }
}

impl Hashing {
    pub fn new(permits: usize, wait: Duration) -> Hashing {
        Hashing {
            buffers: Mutex::new((0..permits).map(|_| Vec::new()).collect()),
            freed: Condvar::new(),
            wait,
        }
    }

    /// A turn, or `None` when none came free within the wait.
    pub fn turn(&self) -> Option<HashingTurn<'_>> {
        let deadline = Instant::now() + self.wait;
        let mut buffers = self.buffers.lock().unwrap();
        loop {
            if let Some(memory) = buffers.pop() {
                return Some(HashingTurn {
                    hashing: self,
                    memory,
                });
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            buffers = self.freed.wait_timeout(buffers, left).unwrap().0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_client_past_the_limit_until_the_window_ends() {
        let limiter = LoginLimiter::new(3, Duration::from_millis(200));
        for _ in 0..3 {
            limiter.begin("a", Some("x")).unwrap().fail();
        }
        assert!(limiter.begin("a", Some("y")).is_err());
        assert!(limiter.check("a", None).is_err());
        std::thread::sleep(Duration::from_millis(220));
        assert!(limiter.check("a", Some("x")).is_ok());
    }

    #[test]
    fn a_name_under_attack_refuses_only_clients_that_failed() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(60));
        for client in ["a", "b", "c"] {
            limiter.begin(client, Some("x")).unwrap().fail();
        }
        // `d` has not failed: it may try, and a right password is taken back.
        drop(limiter.begin("d", Some("x")).unwrap());
        assert!(limiter.begin("d", Some("x")).is_ok());
        // `a` failed once and the name is past its limit.
        assert!(limiter.begin("a", Some("x")).is_err());
        assert!(limiter.begin("a", Some("y")).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_against_the_client() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(60));
        let held: Vec<_> = (0..3)
            .map(|_| limiter.begin("a", Some("x")).unwrap())
            .collect();
        assert!(limiter.begin("a", Some("x")).is_err());
        drop(held);
        assert!(limiter.begin("a", Some("x")).is_ok());
    }

    #[test]
    fn hashing_turns_are_bounded_and_wait_a_bounded_time() {
        let hashing = Hashing::new(2, Duration::from_millis(50));
        let first = hashing.turn().unwrap();
        let _second = hashing.turn().unwrap();
        let started = Instant::now();
        assert!(hashing.turn().is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(first);
        assert!(hashing.turn().is_some());
    }
}
