//! Helpers shared by the integration tests.
#![allow(dead_code)]

use lancebranch_wal::{Lsn, Recovered};

/// A test record: an index and a payload whose length varies with it.
pub type Rec = (u64, String);

/// The `i`-th test record (0-based). Every 13th one is large (spans sectors
/// and exceeds small segment sizes).
pub fn rec(i: u64) -> Rec {
    if i % 13 == 12 {
        return (i, "0123456789".repeat(70));
    }
    let len = (i * 7 % 23) as usize;
    (i, "abcdefghijklmnopqrstuvwxyz"[..len].to_string())
}

/// Seeds to run: `WAL_TEST_SEED=<n>` runs just that one.
pub fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("WAL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None => default.collect(),
    }
}

/// `(lsn, rec(lsn - 1))` for every LSN in `lsns`.
pub fn expected(lsns: impl IntoIterator<Item = u64>) -> Vec<(Lsn, Rec)> {
    lsns.into_iter().map(|l| (Lsn(l), rec(l - 1))).collect()
}

/// The LSNs of recovered records.
pub fn lsns(r: &Recovered<Rec>) -> Vec<u64> {
    r.records.iter().map(|(l, _)| l.0).collect()
}
