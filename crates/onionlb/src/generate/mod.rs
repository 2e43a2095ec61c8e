//! `onionlb config`: a master key, config.yaml, and everything each
//! instance needs, in one step; or one more service or instance in an
//! existing config.yaml.
//!
//! [`layout`] decides what to write and [`edit`] how an existing
//! config.yaml grows; this module asks the questions (or reads the flags)
//! and writes the files, refusing to overwrite anything unless told to.

mod edit;
mod layout;

use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use onionlb_core::{KeyFormat, MasterKey, OnionAddress};

use crate::cli::{ConfigArgs, KeyFormatArg};
use crate::config::Config;
use layout::{layout, InstanceSpec, Request};

/// Runs the generator: a new configuration, or one more service or
/// instance in an existing one.
pub fn run(args: ConfigArgs) -> anyhow::Result<()> {
    refuse_python_only_flags(&args)?;
    if let Some(service_and_address) = &args.add_instance {
        return add_instance(&args, service_and_address);
    }
    if args.add_service {
        return add_service(&args);
    }
    let request = Answers::gather(&args, true)?.into_request(&args.tag, &[])?;
    let output = layout(&request).context("writing the master key")?;
    write_all(&request.output, &output.files, args.force)?;
    give_key(&args, &request, &output)?;
    println!(
        "Wrote {} files to {}.\n\n{}",
        output.files.len(),
        request.output.display(),
        output.next_steps
    );
    Ok(())
}

/// `--add-service`: a new service's key and instance files beside the
/// existing configuration, and its entry appended to it.
fn add_service(args: &ConfigArgs) -> anyhow::Result<()> {
    let existing = Existing::read(&config_path(args))?;
    let mut answers = Answers::gather(args, false)?;
    answers.output = existing.dir();
    let request = answers.into_request(&args.tag, &edit::names_in_use(&existing.config))?;
    existing.refuse_master(request.master.address())?;
    let mut output = layout(&request).context("writing the master key")?;
    // The service's entry goes into the existing file instead.
    output.files.retain(|f| f.path != Path::new("config.yaml"));
    let instances: Vec<(OnionAddress, String)> = request
        .instances
        .iter()
        .map(|i| (i.address(), i.name().to_owned()))
        .collect();
    let text = edit::add_service(
        &existing.text,
        &edit::NewService {
            key_file: &output.key_file,
            instances: &instances,
        },
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", existing.path.display()))?;
    existing.check_grown(&text, |config| {
        config.services.len() == existing.config.services.len() + 1
    })?;
    write_all(&request.output, &output.files, args.force)?;
    existing.replace(&text)?;
    give_key(args, &request, &output)?;
    println!(
        "Added the service {} to {}; wrote {} files to {}.\n\n{}",
        request.master.address(),
        existing.path.display(),
        output.files.len(),
        request.output.display(),
        output.next_steps
    );
    Ok(())
}

/// Gives the written master key to `--key-owner`, if given.
fn give_key(args: &ConfigArgs, request: &Request, output: &layout::Output) -> anyhow::Result<()> {
    match &args.key_owner {
        Some(owner) => give_to(&request.output.join(&output.key_file), owner),
        None => Ok(()),
    }
}

/// onionbalance-config's flags that onionlb cannot honour, refused with
/// what to do instead (before anything is written).
fn refuse_python_only_flags(args: &ConfigArgs) -> anyhow::Result<()> {
    if args.password.is_some() {
        bail!(
            "-p/--password: onionlb writes no password-protected keys (neither does \
             tor); protect the master key by its file mode (0600, written so) or keep it offline"
        );
    }
    if args.num_services != 1 {
        bail!(
            "-s/--num-services {}: onionlb config makes one service at a time; run it \
             again with --add-service for each further service",
            args.num_services
        );
    }
    Ok(())
}

/// The configuration the edit modes change.
fn config_path(args: &ConfigArgs) -> PathBuf {
    args.config
        .clone()
        .unwrap_or_else(|| args.output.join("config.yaml"))
}

/// `--add-instance SERVICE ADDRESS`: one more instance in the existing
/// configuration, named TAGn after the names in use.
fn add_instance(args: &ConfigArgs, service_and_address: &[String]) -> anyhow::Result<()> {
    let [service, address] = service_and_address else {
        bail!("--add-instance takes the service's master address and the instance's address");
    };
    let master: OnionAddress = service
        .parse()
        .with_context(|| format!("--add-instance: {service:?} is not an onion address"))?;
    let address: OnionAddress = address
        .parse()
        .with_context(|| format!("--add-instance: {address:?} is not an onion address"))?;
    let existing = Existing::read(&config_path(args))?;
    let masters = existing.masters()?;
    let Some(index) = masters.iter().position(|m| *m == master) else {
        bail!(
            "{}: no service has the master address {master} (it has: {})",
            existing.path.display(),
            masters
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let service = &existing.config.services[index];
    if let Some(listed) = service.instances.iter().find(|i| i.address == address) {
        bail!(
            "{}:{}: {address} is already an instance of {master}",
            existing.path.display(),
            listed.line
        );
    }
    let name = fresh_name(&args.tag, &edit::names_in_use(&existing.config));
    let text = edit::add_instance(&existing.text, service, address, &name)
        .map_err(|e| anyhow::anyhow!("{}: {e}", existing.path.display()))?;
    existing.check_grown(&text, |config| {
        config.services[index].instances.len() == service.instances.len() + 1
    })?;
    existing.replace(&text)?;
    println!(
        "Added {address} as {name} to the service {master} in {}.\n\n\
         Next steps:\n\
         1. On the instance's machine, put this line into its HiddenServiceDir's ob_config file:\n\
         \x20  MasterOnionAddress {master}\n\
         \x20  and this line into that service's block of its torrc, then restart tor (a reload\n\
         \x20  does not make it an instance):\n\
         \x20  HiddenServiceOnionbalanceInstance 1\n\
         2. Reload the manager (systemctl reload onionlb, or SIGHUP).",
        existing.path.display()
    );
    Ok(())
}

/// The first of TAG1, TAG2, ... not in `taken`.
fn fresh_name(tag: &str, taken: &[String]) -> String {
    (1..)
        .map(|n| format!("{tag}{n}"))
        .find(|name| !taken.contains(name))
        .unwrap_or_else(|| tag.to_owned())
}

/// An existing config.yaml, read for an edit.
struct Existing {
    path: PathBuf,
    text: String,
    config: Config,
}

impl Existing {
    /// Reads and checks the file, as the manager would.
    fn read(path: &Path) -> anyhow::Result<Self> {
        let path =
            std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
        let text = Config::read_text(&path)?;
        // A file without services yet (the package's commented one) is
        // what --add-service starts from.
        let config = Config::parse_unfinished(&path, &text)?;
        Ok(Existing { path, text, config })
    }

    /// The directory the new key and instance files go to.
    fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_owned)
    }

    /// The master address of each service, from its key file (read as the
    /// manager reads it, whatever its mode: only the address is needed).
    fn masters(&self) -> anyhow::Result<Vec<OnionAddress>> {
        let mut masters = Vec::new();
        for (index, service) in self.config.services.iter().enumerate() {
            masters
                .push(crate::manager::keyfile::load(&self.path, index, service, true)?.address());
        }
        Ok(masters)
    }

    /// Refuses a master already configured.
    fn refuse_master(&self, master: OnionAddress) -> anyhow::Result<()> {
        if let Some(index) = self.masters()?.iter().position(|m| *m == master) {
            bail!(
                "{}:{}: the service {master} is already configured",
                self.path.display(),
                self.config.services[index].key_line
            );
        }
        Ok(())
    }

    /// Checks that `text` reads as a configuration and `grown` holds of it.
    fn check_grown(&self, text: &str, grown: impl Fn(&Config) -> bool) -> anyhow::Result<()> {
        let config = Config::parse(&self.path, text)
            .context("the edited configuration does not read back; nothing was written")?;
        if !grown(&config) {
            bail!(
                "{}: the edit did not add what it should (an unusual layout?); nothing was \
                 written: add the entry by hand",
                self.path.display()
            );
        }
        Ok(())
    }

    /// Replaces the file with `text` in one rename, keeping its mode and
    /// owner.
    fn replace(&self, text: &str) -> anyhow::Result<()> {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let meta = std::fs::metadata(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        let mut temp = self.path.clone().into_os_string();
        temp.push(".onionlb-new");
        let temp = PathBuf::from(temp);
        let _ = std::fs::remove_file(&temp);
        let result = (|| -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(text.as_bytes())?;
            // Only root may give a file away; anyone keeps their own.
            if meta.uid() != nix::unistd::geteuid().as_raw()
                || meta.gid() != nix::unistd::getegid().as_raw()
            {
                std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))?;
            }
            file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&temp);
            return Err(e).with_context(|| format!("replacing {}", self.path.display()));
        }
        Ok(())
    }
}

/// Makes `user` (a name or a uid) the owner of `path`.
fn give_to(path: &Path, user: &str) -> anyhow::Result<()> {
    let uid = match user.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => nix::unistd::User::from_name(user)
            .with_context(|| format!("looking up the user {user}"))?
            .with_context(|| format!("--key-owner: no user {user} here"))?
            .uid
            .as_raw(),
    };
    std::os::unix::fs::chown(path, Some(uid), None)
        .with_context(|| format!("giving {} to {user} (this needs root)", path.display()))
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
    /// The answers from the flags, or asked on the terminal unless
    /// `--no-interactive` (the output directory only when `where_to`).
    fn gather(args: &ConfigArgs, where_to: bool) -> anyhow::Result<Self> {
        if args.no_interactive {
            Ok(Self::from_args(args))
        } else {
            Self::ask(args, where_to)
        }
    }

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

    /// Asks on the terminal, offering the flags' values as defaults; the
    /// output directory only when `where_to` (an added service's files go
    /// beside its configuration).
    fn ask(args: &ConfigArgs, where_to: bool) -> anyhow::Result<Self> {
        let mut answers = Self::from_args(args);
        let mut prompt = Prompt::new();
        if where_to {
            answers.output = prompt
                .ask(
                    "Directory to write to",
                    &answers.output.display().to_string(),
                )?
                .into();
        }
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

    /// The request, with instances named TAG1, TAG2, ... skipping the
    /// names in `taken`.
    fn into_request(self, tag: &str, taken: &[String]) -> anyhow::Result<Request> {
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
        let mut names: Vec<String> = taken.to_vec();
        let mut next_name = || {
            let name = fresh_name(tag, &names);
            names.push(name.clone());
            name
        };
        let mut instances = Vec::new();
        for address in self.existing {
            instances.push(InstanceSpec::Existing {
                name: next_name(),
                address,
            });
        }
        for _ in 0..self.new_instances {
            instances.push(InstanceSpec::New {
                name: next_name(),
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
