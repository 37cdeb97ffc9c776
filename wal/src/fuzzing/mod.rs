//! Fuzz harnesses (feature `fuzzing`): functions that take arbitrary bytes,
//! drive the log with them and panic on any violated invariant. They are
//! the bodies of the cargo-fuzz targets in the repository's `fuzz/`
//! directory, and `tests/fuzz_corpus.rs` replays the committed corpus and
//! regressions through them in plain `cargo test`.
//!
//! * [`wal_decode`]: the bytes are the files of a log directory (segment
//!   files, raw or built from frame descriptions with valid checksums); every
//!   [`RecoveryMode`](crate::RecoveryMode) must agree with an independent
//!   reference reader of `FORMAT.md`, and opening for writing must leave a
//!   clean log that accepts appends.
//! * [`wal_ops`]: the bytes are decoded (with [`arbitrary`]) into a
//!   [`Scenario`]: a configuration and up to [`MAX_OPS`] [`Op`]s (appends,
//!   batches, syncs, checkpoint truncation, injected `fsync` failures and
//!   power loss, crashes and reopens) run on a [`SimStorage`](crate::SimStorage)
//!   against an in-memory model of what must and what may survive.
//!
//! Both are deterministic, need no file system and take well under a
//! millisecond for typical fuzzer inputs.
//!
//! # Example
//!
//! ```
//! use lancebranch_wal::fuzzing::{wal_decode, wal_ops};
//!
//! // Any bytes are valid input; a violated invariant is a panic.
//! for input in [&b""[..], b"\x01\x00\x10\x00hello, segment", b"arbitrary ops"] {
//!     wal_decode(input);
//!     wal_ops(input);
//! }
//! ```

mod decode;
mod ops;

pub use decode::{DecodeInput, wal_decode};
pub use ops::{
    MAX_BATCH, MAX_OPS, MAX_PAYLOAD, Mode, Op, OpsConfig, Scenario, run_scenario, wal_ops,
};
