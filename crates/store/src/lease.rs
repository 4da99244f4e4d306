//! Leases: how a running build or deploy is known to be alive.
//!
//! The process running a build or deploy holds a lease on its row: an owner token, random per
//! process, and the time (unix ms) the lease lapses. The process renews it every
//! [`LEASE_RENEW_EVERY`] for another [`LEASE_TERM`]; a lease that lapsed means its process is
//! gone (killed, crashed, its machine lost), whatever became of the process id, and any
//! `serve` may then mark the work interrupted and settle what it left.

use std::sync::OnceLock;
use std::time::Duration;

/// How long a lease lasts from its last renewal.
pub const LEASE_TERM: Duration = Duration::from_secs(15);
/// How often the process running a build or deploy renews its lease.
pub const LEASE_RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often `serve` looks for builds and deploys whose lease lapsed.
pub const LEASE_REAP_EVERY: Duration = Duration::from_secs(3);

/// Who holds a lease, and for how long each grant or renewal lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub term: Duration,
}

impl Lease {
    /// This process's lease: its owner token (32 random hex digits, made once per process)
    /// for [`LEASE_TERM`].
    pub fn this_process() -> Lease {
        static OWNER: OnceLock<String> = OnceLock::new();
        let owner = OWNER.get_or_init(|| {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes).expect("the system has randomness");
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        });
        Lease {
            owner: owner.clone(),
            term: LEASE_TERM,
        }
    }

    /// When a lease granted or renewed at `now_ms` lapses (unix ms).
    pub(crate) fn until(&self, now_ms: i64) -> i64 {
        now_ms + self.term.as_millis() as i64
    }
}
