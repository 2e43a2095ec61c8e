//! onionlb's side of the micro benchmarks (see the crate README): the same
//! inputs file the Python script reads, given by `ONIONLB_BENCH_INPUTS`;
//! fresh inputs when it is not set.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use onionlb_bench::micro::{Inputs, SIZES};
use onionlb_bench::synthetic;
use onionlb_core::consensus::Consensus;
use onionlb_core::descriptor::{
    build_master_descriptor, default_flow_control, validate_blinded, validate_instance_descriptor,
    Blinding, IntroPoint, MasterDescriptorPlan, PeriodSigner,
};
use onionlb_core::hsdir::{hsdirs, Ring};
use onionlb_core::period::{DescriptorSlot, PeriodRules};
use onionlb_core::{MasterKey, OnionAddress};
use tor_hscrypto::pk::HsIdKey;
use tor_hscrypto::time::TimePeriod;

fn inputs() -> Inputs {
    match std::env::var_os("ONIONLB_BENCH_INPUTS") {
        Some(path) => Inputs::read(path.as_ref()).unwrap(),
        None => Inputs::generate().unwrap(),
    }
}

fn at(unix: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(unix)
}

/// The first slot's descriptor of `period` at `now` with `intro_points`,
/// its revision counter included (its cost grows through the
/// shared-random run).
fn plan<'a>(
    master: &MasterKey,
    period: TimePeriod,
    now: SystemTime,
    intro_points: &'a [IntroPoint],
) -> MasterDescriptorPlan<'a> {
    MasterDescriptorPlan {
        period,
        revision: master
            .revision_key()
            .counter(DescriptorSlot::First, now, synthetic::RUN_LENGTH),
        intro_points,
        flow_control: default_flow_control(31),
        now,
        max_size: 50_000,
    }
}

fn benches(c: &mut Criterion) {
    let inputs = inputs();
    let master = MasterKey::from_bytes(inputs.master_pem.as_bytes()).unwrap();
    let address: OnionAddress = inputs.instance_address.parse().unwrap();
    let instance = HsIdKey::try_from(address.hs_id()).unwrap();

    // Build, sign and encrypt a master descriptor from scratch (a signer
    // made for it alone), as Python Onionbalance always does.
    let mut build = c.benchmark_group("build_master");
    for point in &inputs.points {
        let now = at(point.unix);
        let period = synthetic::period_at(now).unwrap();
        for (size, text) in SIZES.iter().zip(&point.instance_descriptors) {
            let intro_points =
                validate_instance_descriptor(text, &instance, &[period], now, 100_000)
                    .unwrap()
                    .intro_points;
            build.bench_function(BenchmarkId::new(point.name.as_str(), size), |b| {
                b.iter(|| {
                    let plan = plan(&master, period, now, &intro_points);
                    black_box(build_master_descriptor(&master, &plan, &mut rand::rng()).unwrap())
                })
            });
        }
    }
    build.finish();

    // The same with the period's signer kept and the intro points certified
    // before: what a republication costs the manager.
    let mut again = c.benchmark_group("republish_master");
    let point = &inputs.points[0];
    let now = at(point.unix);
    let period = synthetic::period_at(now).unwrap();
    let mut signer = PeriodSigner::new(&master, period, now, &mut rand::rng()).unwrap();
    for (size, text) in SIZES.iter().zip(&point.instance_descriptors).skip(1) {
        let intro_points = validate_instance_descriptor(text, &instance, &[period], now, 100_000)
            .unwrap()
            .intro_points;
        again.bench_function(BenchmarkId::new(point.name.as_str(), size), |b| {
            b.iter(|| {
                let plan = plan(&master, period, now, &intro_points);
                black_box(signer.build(&plan, &mut rand::rng()).unwrap())
            })
        });
    }
    again.finish();

    // Parse, validate and decrypt one instance descriptor, as the manager
    // does for each new one: with the instance's blinded key and
    // subcredential for the period, which it derives once per period.
    let mut parse = c.benchmark_group("parse_instance");
    for point in &inputs.points {
        let now = at(point.unix);
        let period = synthetic::period_at(now).unwrap();
        let blinding = [Blinding::derive(&instance, period).unwrap()];
        for (size, text) in SIZES.iter().zip(&point.instance_descriptors) {
            parse.bench_function(BenchmarkId::new(point.name.as_str(), size), |b| {
                b.iter(|| black_box(validate_blinded(text, &blinding, now, 100_000).unwrap()))
            });
        }
    }
    parse.finish();

    // The same, deriving the blinding each time (a period's first).
    let mut first = c.benchmark_group("parse_instance_first");
    let point = &inputs.points[0];
    let now = at(point.unix);
    let period = synthetic::period_at(now).unwrap();
    let text = &point.instance_descriptors[1];
    first.bench_function(BenchmarkId::new(point.name.as_str(), SIZES[1]), |b| {
        b.iter(|| {
            black_box(
                validate_instance_descriptor(text, &instance, &[period], now, 100_000).unwrap(),
            )
        })
    });
    first.finish();

    // Place every HSDir of the consensus on the ring for one descriptor
    // and pick the responsible ones.
    let consensus = Consensus::parse(&inputs.consensus).unwrap();
    let dirs = hsdirs(&consensus, &inputs.microdescs);
    assert_eq!(dirs.len(), onionlb_bench::micro::RING_RELAYS);
    let rules = PeriodRules::new(&consensus, false);
    let [first, _] = rules.slots_for(&consensus).unwrap();
    let (blinded, _) = HsIdKey::from(master.keypair())
        .compute_blinded_key(first.period)
        .unwrap();
    let blinded = blinded.id();
    c.bench_function("hsdir_ring/8000", |b| {
        b.iter(|| {
            let ring = Ring::new(&dirs, first);
            black_box(ring.responsible(&blinded, 2, 4))
        })
    });
}

criterion_group! {
    name = micro;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(micro);
