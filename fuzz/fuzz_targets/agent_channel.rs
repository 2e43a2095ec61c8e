//! The agent channel's decoder, both directions, on arbitrary bytes: never
//! a panic, and what decodes encodes back to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use onionlb_core::agent::{Decoder, Message, ToAgent, ToManager};

fn decode_all<M: Message + PartialEq + std::fmt::Debug>(data: &[u8], encode: fn(&M) -> Vec<u8>) {
    let mut decoder = Decoder::<M>::default();
    for piece in data.chunks(7) {
        decoder.push(piece);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    let mut again = Decoder::<M>::default();
                    again.push(&encode(&message));
                    assert_eq!(again.next_message().ok().flatten().as_ref(), Some(&message));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    decode_all::<ToManager>(data, ToManager::encode);
    decode_all::<ToAgent>(data, ToAgent::encode);
});
