//! Branch operations of the main crate (links Lance); built only with
//! `--features branch`. See `lancebranch::fuzzing::branch_ops`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lancebranch::fuzzing::branch_ops(data);
});
