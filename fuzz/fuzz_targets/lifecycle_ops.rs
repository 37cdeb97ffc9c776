//! The whole public surface, one operation at a time and in concurrent
//! groups, against the model: see `lancebranch::fuzzing::lifecycle_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lancebranch::fuzzing::lifecycle_ops(data));
