//! The one integration-test binary (every file directly under `tests/`
//! links all of Lance, so the suites live here as modules).

mod branched;
mod crash_injection;
mod diff_stream;
mod fsck;
mod fuzz_corpus;
mod golden;
mod history;
mod kill_recovery;
mod lance_backend;
mod lifecycle;
mod merge;
mod pausing;
mod s3;
mod shared;
mod store_faults;
mod stream;
