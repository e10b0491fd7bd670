//! Arbitrary bytes become a matrix (shape, precision, layout, maximize from the first
//! bytes; raw float bit patterns after): the solver must never panic, and every `Ok`
//! must be a valid assignment. The same decoder runs under proptest in `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lsap::fuzz_input::check_bytes(data);
});
