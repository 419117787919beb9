//! Any text a WebSocket client sends goes through `ClientFrame::parse`: it
//! must answer with a frame or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parley_actors::protocol::ClientFrame;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ClientFrame::parse(text);
    }
});
