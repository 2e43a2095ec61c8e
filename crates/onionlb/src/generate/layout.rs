//! What `onionlb config` writes, decided without touching the disk.
//!
//! ```text
//! DIR/config.yaml                          the manager's configuration
//! DIR/<master address>.key                 the master key (0600)
//! DIR/instances/NAME/torrc                 lines for the instance's torrc
//! DIR/instances/NAME/hidden_service/       (0700) for a generated instance:
//!     hs_ed25519_secret_key (0600), hs_ed25519_public_key, hostname, ob_config
//! DIR/instances/NAME/ob_config             for an existing instance: goes
//!                                          into its own HiddenServiceDir
//! ```
//!
//! The `ob_config` file is the step Python Onionbalance's generator leaves
//! out: without it (and `HiddenServiceOnionbalanceInstance 1`) an instance
//! drops every client that arrives through the master address.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use onionlb_core::{KeyError, KeyFormat, MasterKey, OnionAddress};

/// One backend instance to configure.
pub enum InstanceSpec {
    /// An instance that already runs with this address.
    Existing {
        /// Its name in config.yaml.
        name: String,
        /// Its address.
        address: OnionAddress,
    },
    /// A new instance with this freshly generated key.
    New {
        /// Its name in config.yaml and its directory's name.
        name: String,
        /// Its identity key.
        key: Box<MasterKey>,
    },
}

/// Everything the generator was asked for.
pub struct Request {
    /// The master key.
    pub master: MasterKey,
    /// How to store it.
    pub key_format: KeyFormat,
    /// The instances.
    pub instances: Vec<InstanceSpec>,
    /// The port clients connect to on the onion address.
    pub virtual_port: u16,
    /// Where each instance's tor forwards it (`HiddenServicePort` target).
    pub target: String,
    /// Where generated instances' `HiddenServiceDir`s will live on their
    /// machines, if not where they are written.
    pub hs_dir_base: Option<PathBuf>,
    /// The output directory, absolute: the torrc lines name paths in it.
    pub output: PathBuf,
}

/// A file to write, relative to the output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    /// Where, relative to the output directory.
    pub path: PathBuf,
    /// What.
    pub contents: Vec<u8>,
    /// Secret: mode 0600 (others 0644).
    pub secret: bool,
}

/// The files, and what the operator does next.
pub struct Output {
    /// Files in writing order; every directory on their way is made 0700.
    pub files: Vec<OutputFile>,
    /// The master key's file, relative to the output directory.
    pub key_file: String,
    /// The next steps, for the terminal.
    pub next_steps: String,
}

/// Lays out every file for `request`.
pub fn layout(request: &Request) -> Result<Output, KeyError> {
    let master = request.master.address();
    let key_file = format!("{}.key", master.without_suffix());
    let mut files = vec![
        OutputFile {
            path: PathBuf::from("config.yaml"),
            contents: config_yaml(&key_file, &request.instances).into_bytes(),
            secret: false,
        },
        OutputFile {
            path: PathBuf::from(&key_file),
            contents: request.master.encode(request.key_format)?,
            secret: true,
        },
    ];
    let ob_config = format!("MasterOnionAddress {master}\n").into_bytes();
    for instance in &request.instances {
        let dir = Path::new("instances").join(instance.name());
        match instance {
            InstanceSpec::Existing { .. } => {
                files.push(OutputFile {
                    path: dir.join("ob_config"),
                    contents: ob_config.clone(),
                    secret: false,
                });
                files.push(OutputFile {
                    path: dir.join("torrc"),
                    contents: torrc_lines(request, instance, None).into_bytes(),
                    secret: false,
                });
            }
            InstanceSpec::New { name, key } => {
                let hs = dir.join("hidden_service");
                let mut keys = key.tor_key_files();
                files.extend([
                    OutputFile {
                        path: hs.join("hs_ed25519_secret_key"),
                        contents: std::mem::take(&mut keys.secret_key),
                        secret: true,
                    },
                    OutputFile {
                        path: hs.join("hs_ed25519_public_key"),
                        contents: std::mem::take(&mut keys.public_key),
                        secret: false,
                    },
                    OutputFile {
                        path: hs.join("hostname"),
                        contents: std::mem::take(&mut keys.hostname).into_bytes(),
                        secret: false,
                    },
                    OutputFile {
                        path: hs.join("ob_config"),
                        contents: ob_config.clone(),
                        secret: false,
                    },
                ]);
                let hs_dir = match &request.hs_dir_base {
                    Some(base) => base.join(name),
                    None => request.output.join(&hs),
                };
                files.push(OutputFile {
                    path: dir.join("torrc"),
                    contents: torrc_lines(request, instance, Some(&hs_dir)).into_bytes(),
                    secret: false,
                });
            }
        }
    }
    Ok(Output {
        next_steps: next_steps(request, &key_file),
        files,
        key_file,
    })
}

impl InstanceSpec {
    /// Its name.
    pub fn name(&self) -> &str {
        match self {
            InstanceSpec::Existing { name, .. } | InstanceSpec::New { name, .. } => name,
        }
    }

    /// Its onion address.
    pub fn address(&self) -> OnionAddress {
        match self {
            InstanceSpec::Existing { address, .. } => *address,
            InstanceSpec::New { key, .. } => key.address(),
        }
    }
}

/// config.yaml in Python Onionbalance's layout.
fn config_yaml(key_file: &str, instances: &[InstanceSpec]) -> String {
    let mut yaml = String::from(
        "# Written by `onionlb config`. Python Onionbalance v3 reads it as well.\n\
         services:\n",
    );
    let _ = writeln!(yaml, "- key: {key_file}");
    yaml.push_str("  instances:\n");
    for instance in instances {
        let _ = writeln!(yaml, "  - address: {}", instance.address());
        let _ = writeln!(yaml, "    name: {}", instance.name());
    }
    yaml
}

/// The torrc lines of one instance. `hs_dir` is its `HiddenServiceDir`
/// when we generated it.
fn torrc_lines(request: &Request, instance: &InstanceSpec, hs_dir: Option<&Path>) -> String {
    let master = request.master.address();
    let mut torrc = format!(
        "# onionlb instance {} ({}) of {master}\n",
        instance.name(),
        instance.address()
    );
    match hs_dir {
        Some(dir) => {
            let _ = writeln!(torrc, "HiddenServiceDir {}", dir.display());
        }
        None => torrc.push_str(
            "# In the block of this instance's existing HiddenServiceDir, whose\n\
             # directory must also hold the ob_config file written beside this one:\n",
        ),
    }
    let _ = writeln!(
        torrc,
        "HiddenServicePort {} {}",
        request.virtual_port, request.target
    );
    torrc.push_str("HiddenServiceOnionbalanceInstance 1\n");
    torrc
}

fn next_steps(request: &Request, key_file: &str) -> String {
    let out = request.output.display();
    let master = request.master.address();
    let mut text = format!(
        "Master address: {master}\n\n\
         Next steps:\n\
         1. Keep {out}/{key_file} on the manager's machine only: it is the service's identity.\n\
         2. For each instance:\n"
    );
    for instance in &request.instances {
        let name = instance.name();
        match instance {
            InstanceSpec::New { .. } => {
                let _ = writeln!(
                    text,
                    "   - {name}: copy {out}/instances/{name}/hidden_service/ to its machine \
                     (owned by the tor user, mode 0700{}), add {out}/instances/{name}/torrc \
                     to its torrc, restart tor; then delete {out}/instances/{name}/hidden_service/ \
                     here (its secret key belongs on that machine only).",
                    request
                        .hs_dir_base
                        .as_ref()
                        .map(|b| format!(", at {}/{name}", b.display()))
                        .unwrap_or_default()
                );
            }
            InstanceSpec::Existing { .. } => {
                let _ = writeln!(
                    text,
                    "   - {name}: put {out}/instances/{name}/ob_config into its HiddenServiceDir, \
                     add the lines of {out}/instances/{name}/torrc to that service's block, restart \
                     tor (a reload does not make it an instance)."
                );
            }
        }
    }
    let _ = write!(
        text,
        "3. On the manager's machine, run a tor with a ControlPort (or ControlSocket) and:\n\
         \x20  onionlb -c {out}/config.yaml\n\
         4. Clients then reach every instance through {master}\n"
    );
    text
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::config::Config;

    fn request(dir: &Path) -> Request {
        let mut rng = rand::rng();
        let (master, _) = MasterKey::generate(&mut rng).unwrap();
        let (existing, _) = MasterKey::generate(&mut rng).unwrap();
        let (new, _) = MasterKey::generate(&mut rng).unwrap();
        Request {
            master,
            key_format: KeyFormat::Tor,
            instances: vec![
                InstanceSpec::Existing {
                    name: "old1".into(),
                    address: existing.address(),
                },
                InstanceSpec::New {
                    name: "new1".into(),
                    key: Box::new(new),
                },
            ],
            virtual_port: 80,
            target: "127.0.0.1:8080".into(),
            hs_dir_base: None,
            output: dir.to_owned(),
        }
    }

    fn file<'a>(output: &'a Output, path: &str) -> &'a OutputFile {
        output
            .files
            .iter()
            .find(|f| f.path == Path::new(path))
            .unwrap_or_else(|| panic!("no {path}"))
    }

    #[test]
    fn config_names_the_key_and_every_instance_and_loads() {
        let dir = Path::new("/srv/ob");
        let request = request(dir);
        let output = layout(&request).unwrap();
        let yaml = String::from_utf8(file(&output, "config.yaml").contents.clone()).unwrap();
        let config = Config::parse(&dir.join("config.yaml"), &yaml).unwrap();
        assert!(config.unknown_keys.is_empty());
        let service = &config.services[0];
        let key_name = format!("{}.key", request.master.address().without_suffix());
        assert_eq!(service.key, dir.join(&key_name));
        let listed: Vec<_> = service
            .instances
            .iter()
            .map(|i| (i.name.clone().unwrap(), i.address))
            .collect();
        let expected: Vec<_> = request
            .instances
            .iter()
            .map(|i| (i.name().to_owned(), i.address()))
            .collect();
        assert_eq!(listed, expected);

        let key = file(&output, &key_name);
        assert!(key.secret);
        let read = MasterKey::from_bytes(&key.contents).unwrap();
        assert_eq!(read.address(), request.master.address());
        assert_eq!(read.format(), KeyFormat::Tor);
    }

    #[test]
    fn a_new_instance_gets_its_keys_ob_config_and_torrc() {
        let dir = Path::new("/srv/ob");
        let request = request(dir);
        let output = layout(&request).unwrap();
        let master = request.master.address();
        let new = &request.instances[1];

        let secret = file(
            &output,
            "instances/new1/hidden_service/hs_ed25519_secret_key",
        );
        assert!(secret.secret);
        assert_eq!(
            MasterKey::from_bytes(&secret.contents).unwrap().address(),
            new.address()
        );
        assert_eq!(
            file(&output, "instances/new1/hidden_service/hostname").contents,
            format!("{}\n", new.address()).into_bytes()
        );
        assert_eq!(
            file(&output, "instances/new1/hidden_service/ob_config").contents,
            format!("MasterOnionAddress {master}\n").into_bytes()
        );
        let torrc =
            String::from_utf8(file(&output, "instances/new1/torrc").contents.clone()).unwrap();
        assert!(torrc.contains("HiddenServiceDir /srv/ob/instances/new1/hidden_service\n"));
        assert!(torrc.contains("HiddenServicePort 80 127.0.0.1:8080\n"));
        assert!(torrc.contains("HiddenServiceOnionbalanceInstance 1\n"));

        // An existing instance gets the ob_config to install and no keys.
        assert_eq!(
            file(&output, "instances/old1/ob_config").contents,
            format!("MasterOnionAddress {master}\n").into_bytes()
        );
        assert!(!output
            .files
            .iter()
            .any(|f| f.path.starts_with("instances/old1/hidden_service")));
        assert!(output.next_steps.contains(&master.to_string()));
    }

    #[test]
    fn hs_dir_base_moves_the_instance_directory_and_pem_needs_a_seed() {
        let dir = Path::new("/srv/ob");
        let mut request = request(dir);
        request.hs_dir_base = Some("/var/lib/tor".into());
        request.key_format = KeyFormat::Pem;
        let output = layout(&request).unwrap();
        let torrc =
            String::from_utf8(file(&output, "instances/new1/torrc").contents.clone()).unwrap();
        assert!(
            torrc.contains("HiddenServiceDir /var/lib/tor/new1\n"),
            "{torrc}"
        );
        let key_name = format!("{}.key", request.master.address().without_suffix());
        assert!(file(&output, &key_name)
            .contents
            .starts_with(b"-----BEGIN PRIVATE KEY-----"));

        // A key imported from tor's format has no seed to write as PEM.
        let tor_bytes = request.master.encode(KeyFormat::Tor).unwrap();
        request.master = MasterKey::from_bytes(&tor_bytes).unwrap();
        assert_eq!(layout(&request).err(), Some(KeyError::NoSeed));
    }
}
