//! The consensus and microdescriptor readers on arbitrary text: never a
//! panic, whatever the parameters, times and keys say.

#![no_main]

use libfuzzer_sys::fuzz_target;
use onionlb_core::consensus::{microdesc_ed25519_ids, Consensus};
use onionlb_core::period::PeriodRules;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = microdesc_ed25519_ids(text);
    let Ok(consensus) = Consensus::parse(text) else {
        return;
    };
    let _ = consensus.voting_interval();
    let _ = consensus.param("hsdir_spread_store", 4, 1, 128);
    for testing in [false, true] {
        let rules = PeriodRules::new(&consensus, testing);
        let _ = rules.slots_for(&consensus);
    }
});
