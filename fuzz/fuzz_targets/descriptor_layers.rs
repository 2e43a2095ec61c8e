//! onionlb-core's own reader of instance descriptors, each layer's parser
//! on arbitrary text (outer document, middle layer, inner layer with its
//! intro points): never a panic. Past a signature and a MAC in real use,
//! so called directly; seeded with a real descriptor and its decrypted
//! layers.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        onionlb_core::fuzz_layers(text);
    }
});
