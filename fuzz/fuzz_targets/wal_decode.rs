//! Arbitrary bytes as the files of a log directory, read and opened in every
//! recovery mode; see `lancebranch_wal::fuzzing::wal_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lancebranch_wal::fuzzing::wal_decode(data);
});
