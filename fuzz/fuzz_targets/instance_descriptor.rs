//! Instance descriptor ingestion (`InstanceState::offer`) on arbitrary
//! text for a fixed instance identity and time: never a panic, and nothing
//! is accepted that the checks should refuse. Mutations of a valid signed
//! descriptor (the seed corpus) reach past the outer parse.

#![no_main]

use libfuzzer_sys::fuzz_target;
use onionlb_core::instance::InstanceState;
use onionlb_fuzz::instance_fixture;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fixture = instance_fixture();
    let mut state = InstanceState::new(fixture.identity.clone());
    if state
        .offer(text, &[fixture.period], fixture.now, 50_000)
        .is_ok()
    {
        // Only a descriptor signed by the instance's blinded key gets in,
        // and it must yield what the balancer takes from it.
        let _ = state.intro_point_count();
        assert!(state.descriptor().is_some());
    }
});
