//! Any bytes a client posts as a JSON body go through the same parser as in
//! the server, for every request body type: an answer or a 400, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    parley::routes::parse_every_request_body(data);
});
