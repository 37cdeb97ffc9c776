//! Random operation sequences with injected faults, crashes and reopens,
//! checked against a model; see `lancebranch_wal::fuzzing::wal_ops`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lancebranch_wal::fuzzing::wal_ops(data);
});
