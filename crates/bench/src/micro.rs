//! The micro benchmarks' inputs: one file, read by onionlb's criterion
//! benches and by the Python script that times Python Onionbalance's own
//! code paths, so both work on the same keys, intro points and network.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use onionlb_core::{KeyFormat, MasterKey};
use serde::{Deserialize, Serialize};

use crate::synthetic;

/// Intro point counts of the master descriptors built.
pub const SIZES: [usize; 3] = [2, 6, 20];
/// Relays on the hash ring.
pub const RING_RELAYS: usize = 8000;

/// A point in the shared-random run, where the revision counter is taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    /// `early` or `late`.
    pub name: String,
    /// Unix time.
    pub unix: u64,
    /// Unix time the current shared-random run started.
    pub run_start: u64,
    /// One instance descriptor per entry of [`SIZES`], valid then.
    pub instance_descriptors: Vec<String>,
}

/// Everything both tools' micro benchmarks read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inputs {
    /// The master key, PKCS#8 PEM (both tools read it).
    pub master_pem: String,
    /// The instance whose descriptors these are.
    pub instance_address: String,
    /// The points in the run.
    pub points: Vec<Point>,
    /// A consensus with [`RING_RELAYS`] HSDirs, valid at the late point.
    pub consensus: String,
    /// Its microdescriptors.
    pub microdescs: String,
}

impl Inputs {
    /// New inputs: fresh keys and intro points, 1 hour (early) and 23
    /// hours (late) into the shared-random run that started at the last
    /// midnight UTC before now.
    pub fn generate() -> anyhow::Result<Self> {
        let mut rng = rand::rng();
        let (master, _) = MasterKey::generate(&mut rng).context("generating the master key")?;
        let (instance, _) = MasterKey::generate(&mut rng).context("generating the instance key")?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs();
        let run = synthetic::RUN_LENGTH.as_secs();
        let run_start = now - now % run;
        let mut points = Vec::new();
        for (name, hours) in [("early", 1), ("late", 23)] {
            let unix = run_start + hours * 3600;
            let when = SystemTime::UNIX_EPOCH + Duration::from_secs(unix);
            let instance_descriptors = SIZES
                .iter()
                .map(|&n| {
                    let intro_points = synthetic::intro_points(n, 0)?;
                    synthetic::instance_descriptor(&instance, &intro_points, when, unix)
                })
                .collect::<anyhow::Result<_>>()?;
            points.push(Point {
                name: name.into(),
                unix,
                run_start,
                instance_descriptors,
            });
        }
        let late = SystemTime::UNIX_EPOCH + Duration::from_secs(run_start + 23 * 3600);
        let (consensus, microdescs) = synthetic::network(RING_RELAYS, late);
        let pem = master
            .encode(KeyFormat::Pem)
            .context("encoding the master key")?;
        Ok(Inputs {
            master_pem: String::from_utf8(pem).context("the PEM is not text")?,
            instance_address: instance.address().to_string(),
            points,
            consensus,
            microdescs,
        })
    }

    /// Reads inputs written by [`Inputs::write`].
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes them as JSON.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string(self).context("encoding the inputs")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
    }
}
