//! `onionlb config`: a master key, config.yaml, and everything each
//! instance needs, in one step.
//!
//! [`layout`] decides what to write; this module asks the questions (or
//! reads the flags) and writes the files, refusing to overwrite anything
//! unless told to.

mod layout;

use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use onionlb_core::{KeyFormat, MasterKey, OnionAddress};

use crate::cli::{ConfigArgs, KeyFormatArg};
use layout::{layout, InstanceSpec, Request};

/// Runs the generator.
pub fn run(args: ConfigArgs) -> anyhow::Result<()> {
    let answers = if args.no_interactive {
        Answers::from_args(&args)
    } else {
        Answers::ask(&args)?
    };
    let request = answers.into_request()?;
    let output = layout(&request).context("writing the master key")?;
    write_all(&request.output, &output.files, args.force)?;
    println!(
        "Wrote {} files to {}.\n\n{}",
        output.files.len(),
        request.output.display(),
        output.next_steps
    );
    Ok(())
}

/// The generator's inputs, from flags or from the operator.
struct Answers {
    output: PathBuf,
    import_key: Option<PathBuf>,
    key_format: Option<KeyFormat>,
    existing: Vec<OnionAddress>,
    new_instances: usize,
    virtual_port: u16,
    target: String,
    hs_dir_base: Option<PathBuf>,
}

impl Answers {
    fn from_args(args: &ConfigArgs) -> Self {
        Answers {
            output: args.output.clone(),
            import_key: args.import_key.clone(),
            key_format: args.key_format.map(KeyFormat::from),
            existing: args.instances.clone(),
            new_instances: args.new_instances.unwrap_or(if args.instances.is_empty() {
                2
            } else {
                0
            }),
            virtual_port: args.virtual_port,
            target: args.target.clone(),
            hs_dir_base: args.hs_dir_base.clone(),
        }
    }

    /// Asks on the terminal, offering the flags' values as defaults.
    fn ask(args: &ConfigArgs) -> anyhow::Result<Self> {
        let mut answers = Self::from_args(args);
        let mut prompt = Prompt::new();
        answers.output = prompt
            .ask(
                "Directory to write to",
                &answers.output.display().to_string(),
            )?
            .into();
        let import = prompt.ask(
            "Master key file to import (tor or PEM format; empty: generate a new key)",
            &answers
                .import_key
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        )?;
        answers.import_key = (!import.is_empty()).then(|| import.into());
        let format_default = match answers.key_format {
            Some(KeyFormat::Pem) => "pem",
            Some(KeyFormat::Tor) => "tor",
            None if answers.import_key.is_some() => "same as imported",
            None => "tor",
        };
        answers.key_format = match prompt
            .ask("Store the master key in tor or pem format", format_default)?
            .as_str()
        {
            "tor" => Some(KeyFormat::Tor),
            "pem" => Some(KeyFormat::Pem),
            "same as imported" => None,
            other => bail!("unknown key format {other:?}: answer tor or pem"),
        };
        let existing = prompt.ask(
            "Addresses of instances that already run (comma-separated; empty: none)",
            &answers
                .existing
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        )?;
        answers.existing = existing
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .with_context(|| format!("{s:?} is not an onion address"))
            })
            .collect::<anyhow::Result<_>>()?;
        let default_new = if answers.existing.is_empty() { 2 } else { 0 };
        answers.new_instances = prompt
            .ask(
                "How many new instances to generate keys for",
                &args.new_instances.unwrap_or(default_new).to_string(),
            )?
            .parse()
            .context("the number of new instances")?;
        answers.virtual_port = prompt
            .ask("Port clients connect to", &answers.virtual_port.to_string())?
            .parse()
            .context("the port clients connect to")?;
        answers.target = prompt.ask(
            "Where each instance's tor forwards connections (address:port)",
            &answers.target,
        )?;
        Ok(answers)
    }

    fn into_request(self) -> anyhow::Result<Request> {
        if self.existing.is_empty() && self.new_instances == 0 {
            bail!("no instances: give existing instance addresses or a number of new ones");
        }
        let mut rng = rand::rng();
        let (master, key_format) = match &self.import_key {
            Some(path) => {
                let bytes = torctl::file::read_capped(path, crate::SMALL_FILE_MAX)
                    .map(zeroize::Zeroizing::new)
                    .context("reading the key to import")?;
                let key = MasterKey::from_bytes(&bytes)
                    .with_context(|| format!("reading the key to import, {}", path.display()))?;
                let format = self.key_format.unwrap_or(key.format());
                (key, format)
            }
            None => (
                MasterKey::generate(&mut rng)?.0,
                self.key_format.unwrap_or(KeyFormat::Tor),
            ),
        };
        let mut instances = Vec::new();
        for address in self.existing {
            instances.push(InstanceSpec::Existing {
                name: format!("instance{}", instances.len() + 1),
                address,
            });
        }
        for _ in 0..self.new_instances {
            instances.push(InstanceSpec::New {
                name: format!("instance{}", instances.len() + 1),
                key: Box::new(MasterKey::generate(&mut rng)?.0),
            });
        }
        let output = std::path::absolute(&self.output)
            .with_context(|| format!("resolving {}", self.output.display()))?;
        Ok(Request {
            master,
            key_format,
            instances,
            virtual_port: self.virtual_port,
            target: self.target,
            hs_dir_base: self.hs_dir_base,
            output,
        })
    }
}

impl From<KeyFormatArg> for KeyFormat {
    fn from(arg: KeyFormatArg) -> Self {
        match arg {
            KeyFormatArg::Tor => KeyFormat::Tor,
            KeyFormatArg::Pem => KeyFormat::Pem,
        }
    }
}

/// Questions on stderr, answers from stdin.
struct Prompt {
    stdin: std::io::StdinLock<'static>,
}

impl Prompt {
    fn new() -> Self {
        Prompt {
            stdin: std::io::stdin().lock(),
        }
    }

    /// Asks `question`; an empty answer takes `default`.
    fn ask(&mut self, question: &str, default: &str) -> anyhow::Result<String> {
        if default.is_empty() {
            eprint!("{question}: ");
        } else {
            eprint!("{question} [{default}]: ");
        }
        std::io::stderr().flush().context("writing the question")?;
        let mut line = String::new();
        if self
            .stdin
            .read_line(&mut line)
            .context("reading the answer")?
            == 0
        {
            bail!(
                "no answer to {question:?} (end of input); use --no-interactive to run from flags"
            );
        }
        let answer = line.trim();
        Ok(if answer.is_empty() { default } else { answer }.to_owned())
    }
}

/// Writes `files` under `dir`: directories 0700, secrets 0600, others
/// 0644. Checks first that nothing would be overwritten (unless `force`),
/// so a refusal writes nothing.
fn write_all(dir: &Path, files: &[layout::OutputFile], force: bool) -> anyhow::Result<()> {
    let existing: Vec<String> = files
        .iter()
        .map(|f| dir.join(&f.path))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() && !force {
        let shown = existing
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let more = match existing.len() {
            0..=3 => String::new(),
            n => format!(" and {} more", n - 3),
        };
        bail!("refusing to overwrite {shown}{more} (use --force to replace them)");
    }
    for file in files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        if force {
            // A replaced file gets the mode it should have, not the old one.
            let _ = std::fs::remove_file(&path);
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if file.secret { 0o600 } else { 0o644 })
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        out.write_all(&file.contents)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
