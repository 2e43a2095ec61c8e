//! Adding a service or an instance to an existing config.yaml, as text.
//!
//! The file is the operator's: its comments, order, blank lines and
//! indentation stay as they are, and only the new lines are inserted. The
//! YAML parser does not keep comments, so the edit is made on lines, guided
//! by the lines the configuration reader reports ([`Config`]): a block's
//! items are the lines after its key that are indented deeper, or that start
//! a sequence item (`- `) at the key's own column, as YAML allows. A list
//! written in flow style (`[...]`) is left alone: the edit refuses it, except
//! an empty `services: []`, which becomes a block. The caller parses the
//! result again before writing it.

use std::fmt::Write as _;

use onionlb_core::OnionAddress;

use crate::config::{Config, ServiceConfig};

/// Why a config.yaml could not be edited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The list to extend is written in flow style (`[...]`).
    #[error("line {line}: {key} is written as a [...] list; add the entry by hand, or write the list one item per line")]
    FlowStyle {
        /// The 1-based line of the key.
        line: usize,
        /// Which list.
        key: &'static str,
    },
    /// The line the configuration reader named is not in the text.
    #[error("line {line}: expected the key {key} there")]
    LostKey {
        /// The 1-based line.
        line: usize,
        /// The key looked for.
        key: &'static str,
    },
}

/// A service's entry to add: its key file (as config.yaml will name it)
/// and its instances.
pub struct NewService<'a> {
    /// The key file, relative to config.yaml or absolute.
    pub key_file: &'a str,
    /// Each instance's address and name.
    pub instances: &'a [(OnionAddress, String)],
}

/// Returns `text` with `service` appended to its `services:` list (made
/// when the file has none).
pub fn add_service(text: &str, service: &NewService<'_>) -> Result<String, EditError> {
    let lines: Vec<&str> = text.lines().collect();
    let key_line = lines
        .iter()
        .position(|l| key_of(l) == Some((0, "services")));
    let Some(index) = key_line else {
        // No list yet (a new or all-comment file): start one at the end.
        let mut out = with_final_newline(text);
        out.push_str("services:\n");
        push_service(&mut out, "", service);
        return Ok(out);
    };
    let rest = value_after_key(lines[index]);
    if rest == "[]" {
        let mut out = String::new();
        for line in &lines[..index] {
            let _ = writeln!(out, "{line}");
        }
        out.push_str("services:\n");
        push_service(&mut out, "", service);
        for line in &lines[index + 1..] {
            let _ = writeln!(out, "{line}");
        }
        return Ok(out);
    }
    if !rest.is_empty() {
        return Err(EditError::FlowStyle {
            line: index + 1,
            key: "services",
        });
    }
    let block = Block::after(&lines, index, 0);
    let dash = block.dash_indent.unwrap_or(0);
    let mut entry = String::new();
    push_service(&mut entry, &" ".repeat(dash), service);
    Ok(insert_at(&lines, block.end, &entry))
}

/// Returns `text` with an instance appended to `service`'s `instances:`
/// list.
pub fn add_instance(
    text: &str,
    service: &ServiceConfig,
    address: OnionAddress,
    name: &str,
) -> Result<String, EditError> {
    let lines: Vec<&str> = text.lines().collect();
    // The reader names the line of the list's value, which is the key's own
    // line or, for a block list, its first item: the key is the nearest
    // `instances:` at or above it.
    let lost = EditError::LostKey {
        line: service.instances_line,
        key: "instances",
    };
    let last = service.instances_line.min(lines.len());
    let index = (0..last)
        .rev()
        .find(|&i| key_of(lines[i]).is_some_and(|(_, key)| key == "instances"))
        .ok_or(lost)?;
    let line = lines[index];
    let column = key_of(line).map_or(0, |(column, _)| column);
    if !value_after_key(line).is_empty() {
        return Err(EditError::FlowStyle {
            line: index + 1,
            key: "instances",
        });
    }
    let block = Block::after(&lines, index, column);
    let dash = block.dash_indent.unwrap_or(column + 2);
    let mut entry = String::new();
    push_instance(&mut entry, dash, address, name);
    Ok(insert_at(&lines, block.end, &entry))
}

/// The lines of a key's block value.
struct Block {
    /// The index of the line after its last line that is not blank or a
    /// comment (where a new item goes).
    end: usize,
    /// The column of its first sequence item's dash, if it has one.
    dash_indent: Option<usize>,
}

impl Block {
    /// The block of the key at `lines[key]`, which sits at `column`.
    fn after(lines: &[&str], key: usize, column: usize) -> Block {
        let mut end = key + 1;
        let mut dash_indent = None;
        for (i, line) in lines.iter().enumerate().skip(key + 1) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            let is_item = trimmed == "-" || trimmed.starts_with("- ");
            if indent < column || (indent == column && !is_item) {
                break;
            }
            if is_item && dash_indent.is_none() {
                dash_indent = Some(indent);
            }
            end = i + 1;
        }
        Block { end, dash_indent }
    }
}

/// The column and name of the mapping key a line starts with, if it is
/// one (`  key:`, `  key: value`, or `- key: ...` starting an item; not a
/// comment).
fn key_of(line: &str) -> Option<(usize, &str)> {
    let mut trimmed = line.trim_start();
    let mut indent = line.len() - trimmed.len();
    while let Some(rest) = trimmed.strip_prefix("- ") {
        let inner = rest.trim_start();
        indent += trimmed.len() - inner.len();
        trimmed = inner;
    }
    let (key, rest) = trimmed.split_once(':')?;
    if key.is_empty()
        || key.starts_with(['#', '-'])
        || !(rest.is_empty() || rest.starts_with([' ', '\t']))
    {
        return None;
    }
    Some((indent, key.trim_end()))
}

/// What follows `key:` on its line, without a comment.
fn value_after_key(line: &str) -> &str {
    let rest = line.split_once(':').map_or("", |(_, rest)| rest);
    let rest = match rest.find(" #") {
        Some(at) => &rest[..at],
        None => rest,
    };
    rest.trim()
}

/// Appends a service item whose dash is at `indent`.
fn push_service(out: &mut String, indent: &str, service: &NewService<'_>) {
    let _ = writeln!(out, "{indent}- key: {}", service.key_file);
    let _ = writeln!(out, "{indent}  instances:");
    for (address, name) in service.instances {
        push_instance(out, indent.len() + 2, *address, name);
    }
}

/// Appends an instance item whose dash is at column `dash`.
fn push_instance(out: &mut String, dash: usize, address: OnionAddress, name: &str) {
    let pad = " ".repeat(dash);
    let _ = writeln!(out, "{pad}- address: {address}");
    let _ = writeln!(out, "{pad}  name: {name}");
}

/// `lines` joined, with `entry` (whole lines) before `lines[at]`.
fn insert_at(lines: &[&str], at: usize, entry: &str) -> String {
    let mut out = String::new();
    for line in &lines[..at] {
        let _ = writeln!(out, "{line}");
    }
    out.push_str(entry);
    for line in &lines[at..] {
        let _ = writeln!(out, "{line}");
    }
    out
}

fn with_final_newline(text: &str) -> String {
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The names in use in `config`, for picking new ones.
pub fn names_in_use(config: &Config) -> Vec<String> {
    config
        .services
        .iter()
        .flat_map(|s| s.instances.iter().filter_map(|i| i.name.clone()))
        .collect()
}

#[cfg(test)]
mod test {
    use super::*;
    use std::path::Path;

    /// The same address for the same `n` within a test run.
    fn address(n: u8) -> OnionAddress {
        static KEYS: std::sync::OnceLock<Vec<OnionAddress>> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| {
            let mut rng = rand::rng();
            (0..8)
                .map(|_| {
                    onionlb_core::MasterKey::generate(&mut rng)
                        .unwrap()
                        .0
                        .address()
                })
                .collect()
        })[usize::from(n)]
    }

    fn parse(text: &str) -> Config {
        Config::parse(Path::new("/etc/onionlb/config.yaml"), text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn one_instance(n: u8) -> Vec<(OnionAddress, String)> {
        vec![(address(n), format!("web{n}"))]
    }

    #[test]
    fn a_service_joins_the_list_and_every_comment_stays() {
        for (text, dash) in [
            (
                "# top\nservices:\n# first\n- key: a.key\n  instances:\n  - address: A\n    name: one   # ours\n\n# trailing\nfetch-interval: 60\n",
                "",
            ),
            (
                "services:\n  - key: a.key\n    instances:\n      - address: A\n# end\n",
                "  ",
            ),
        ] {
            let text = text.replace('A', &address(1).to_string());
            let new = add_service(
                &text,
                &NewService {
                    key_file: "b.key",
                    instances: &one_instance(2),
                },
            )
            .unwrap();
            for line in text.lines() {
                assert!(new.contains(line), "{line:?} lost:\n{new}");
            }
            assert!(new.contains(&format!("{dash}- key: b.key\n")), "{new}");
            let config = parse(&new);
            assert_eq!(config.services.len(), 2, "{new}");
            assert_eq!(config.services[1].key, Path::new("/etc/onionlb/b.key"));
            assert_eq!(config.services[1].instances[0].address, address(2));
            assert_eq!(config.services[0].instances[0].address, address(1));
        }
    }

    #[test]
    fn a_file_without_services_gets_a_list_and_flow_lists_are_refused() {
        let commented = "# onionlb's configuration\n# services:\n# - key: x.key";
        let new = add_service(
            commented,
            &NewService {
                key_file: "b.key",
                instances: &one_instance(2),
            },
        )
        .unwrap();
        assert!(
            new.starts_with("# onionlb's configuration\n# services:\n# - key: x.key\nservices:\n")
        );
        assert_eq!(parse(&new).services.len(), 1);

        let empty = add_service(
            "fetch-interval: 60\nservices: []   # none yet\nmetrics-listen: 127.0.0.1:9851\n",
            &NewService {
                key_file: "b.key",
                instances: &one_instance(2),
            },
        )
        .unwrap();
        let config = parse(&empty);
        assert_eq!(config.services.len(), 1);
        assert!(config.metrics_listen.is_some());

        let flow = format!(
            "services: [{{key: a.key, instances: [{{address: {}}}]}}]\n",
            address(1)
        );
        assert_eq!(
            add_service(
                &flow,
                &NewService {
                    key_file: "b.key",
                    instances: &one_instance(2)
                }
            ),
            Err(EditError::FlowStyle {
                line: 1,
                key: "services"
            })
        );
    }

    #[test]
    fn an_instance_joins_its_own_service_only() {
        let text = format!(
            "services:\n- key: a.key\n  instances:\n  - address: {}\n    name: web1\n  # more soon\n- key: b.key\n  instances:\n  - address: {}\n",
            address(1),
            address(2)
        );
        let config = parse(&text);
        let new = add_instance(&text, &config.services[0], address(3), "web3").unwrap();
        let after = parse(&new);
        let of = |s: &ServiceConfig| s.instances.iter().map(|i| i.address).collect::<Vec<_>>();
        assert_eq!(of(&after.services[0]), vec![address(1), address(3)]);
        assert_eq!(of(&after.services[1]), vec![address(2)]);
        assert!(new.contains("  # more soon\n"));
        assert_eq!(after.services[0].instances[1].name.as_deref(), Some("web3"));

        let last = add_instance(&text, &config.services[1], address(4), "web4").unwrap();
        assert_eq!(of(&parse(&last).services[1]), vec![address(2), address(4)]);

        // The list first in its item, before the key.
        let first = format!(
            "services:\n- instances:\n  - address: {}\n  key: a.key\n",
            address(1)
        );
        let config = parse(&first);
        let new = add_instance(&first, &config.services[0], address(5), "web5").unwrap();
        let after = parse(&new);
        assert_eq!(
            of(&after.services[0]),
            vec![address(1), address(5)],
            "{new}"
        );
        assert_eq!(after.services[0].key, Path::new("/etc/onionlb/a.key"));
    }
}
