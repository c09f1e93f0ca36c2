//! Reading a namespace's rules with whatever tools the agent image has, and merging them into one
//! ruleset.
//!
//! iptables has two backends that can both hold rules in one namespace: x_tables
//! (`iptables-legacy-save`, invisible to `nft`) and nf_tables (`iptables-nft-save`, which `nft`
//! also lists, but with opaque `xt` expressions for matches like `-m owner`). Both are read, and
//! native nftables comes from `nft -j list ruleset`. A table that `iptables-nft-save` printed
//! replaces the same table from the nft listing, so no rule is judged twice and none is judged
//! through an opaque `xt` expression.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::netns::{
    find_program, has_global_ipv6, read_in_netns, NetnsError, ToolCommand, ToolOutput,
};
use crate::netfilter::model::Backend;
use crate::netfilter::{iptables, nft_json, IpFamily, Ruleset};

/// What a tool's output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    /// `iptables-save`-style output of one family; `None` backend: read it from the header.
    IptablesSave(IpFamily, Option<Backend>),
    NftJson,
}

/// The dump tools to run in each namespace.
#[derive(Debug, Clone, Default)]
pub struct Toolset {
    pub commands: Vec<(ToolCommand, ToolKind)>,
}

impl Toolset {
    /// The tools found on `PATH`: both iptables backends when their `-save` programs exist (else
    /// plain `iptables-save`), and `nft`.
    pub fn detect() -> Toolset {
        let mut t = Toolset::default();
        let mut add = |name: &str, args: &[&str], kind: ToolKind| -> bool {
            // x_tables lists the legacy tables of the current namespace here: when there are
            // none, iptables-legacy-save has nothing to print and is not run.
            let only_if_nonempty = match kind {
                ToolKind::IptablesSave(family, Some(Backend::IptablesLegacy)) => {
                    Some(PathBuf::from(match family {
                        IpFamily::V4 => "/proc/thread-self/net/ip_tables_names",
                        IpFamily::V6 => "/proc/thread-self/net/ip6_tables_names",
                    }))
                }
                _ => None,
            };
            match find_program(name) {
                Some(program) => {
                    let label = std::iter::once(name)
                        .chain(args.iter().copied())
                        .collect::<Vec<_>>()
                        .join(" ");
                    t.commands.push((
                        ToolCommand {
                            label,
                            program,
                            args: args.iter().map(|s| s.to_string()).collect(),
                            only_if_nonempty,
                        },
                        kind,
                    ));
                    true
                }
                None => false,
            }
        };
        let legacy = add(
            "iptables-legacy-save",
            &[],
            ToolKind::IptablesSave(IpFamily::V4, Some(Backend::IptablesLegacy)),
        );
        add(
            "ip6tables-legacy-save",
            &[],
            ToolKind::IptablesSave(IpFamily::V6, Some(Backend::IptablesLegacy)),
        );
        let nft_variant = add(
            "iptables-nft-save",
            &[],
            ToolKind::IptablesSave(IpFamily::V4, Some(Backend::IptablesNft)),
        );
        add(
            "ip6tables-nft-save",
            &[],
            ToolKind::IptablesSave(IpFamily::V6, Some(Backend::IptablesNft)),
        );
        if !legacy && !nft_variant {
            add(
                "iptables-save",
                &[],
                ToolKind::IptablesSave(IpFamily::V4, None),
            );
            add(
                "ip6tables-save",
                &[],
                ToolKind::IptablesSave(IpFamily::V6, None),
            );
        }
        add("nft", &["-j", "list", "ruleset"], ToolKind::NftJson);
        t
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }
}

/// How one tool fared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolReport {
    pub tool: String,
    pub ok: bool,
    /// Not run: the namespace has no tables of its kind.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// Tables it contributed.
    pub tables: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything read from one namespace.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    pub ruleset: Ruleset,
    pub tools: Vec<ToolReport>,
    /// The namespace has a global IPv6 address outside `lo`.
    pub ipv6: bool,
}

impl Inspection {
    /// Whether at least one tool read the namespace.
    pub fn any_tool_ok(&self) -> bool {
        self.tools.iter().any(|t| t.ok)
    }

    pub fn errors(&self) -> Vec<String> {
        self.tools
            .iter()
            .filter_map(|t| t.error.as_ref().map(|e| format!("{}: {e}", t.tool)))
            .collect()
    }
}

/// Enters the namespace and reads it.
pub fn inspect(path: &Path, tools: &Toolset) -> Result<Inspection, NetnsError> {
    let commands: Vec<ToolCommand> = tools.commands.iter().map(|(c, _)| c.clone()).collect();
    let reading = read_in_netns(path, &commands)?;
    let kinds: Vec<ToolKind> = tools.commands.iter().map(|(_, k)| *k).collect();
    let mut inspection = assemble(&reading.outputs, &kinds);
    inspection.ipv6 = reading.if_inet6.as_deref().is_some_and(has_global_ipv6);
    Ok(inspection)
}

/// Parses and merges tool outputs (`kinds[i]` says what `outputs[i]` is).
pub fn assemble(outputs: &[ToolOutput], kinds: &[ToolKind]) -> Inspection {
    let mut nft = Ruleset::default();
    let mut ipt_nft = Ruleset::default();
    let mut other = Ruleset::default();
    let mut reports = Vec::new();
    for (out, kind) in outputs.iter().zip(kinds) {
        let label = out.command.label.clone();
        let text = match &out.output {
            Err(e) => {
                reports.push(ToolReport {
                    tool: label,
                    ok: false,
                    skipped: false,
                    tables: 0,
                    error: Some(format!("cannot run: {e}")),
                });
                continue;
            }
            Ok(o) if !o.status.success() => {
                let stderr = String::from_utf8_lossy(&o.stderr);
                let first = stderr.lines().next().unwrap_or("").trim().to_string();
                reports.push(ToolReport {
                    tool: label,
                    ok: false,
                    skipped: false,
                    tables: 0,
                    error: Some(format!("{}: {first}", o.status)),
                });
                continue;
            }
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        };
        let parsed = match kind {
            ToolKind::IptablesSave(family, backend) => {
                iptables::parse(&text, &label, Some(*family)).map(|mut rs| {
                    if let Some(b) = backend {
                        rs.tables.iter_mut().for_each(|t| t.backend = *b);
                    }
                    rs
                })
            }
            ToolKind::NftJson if text.trim().is_empty() => Ok(Ruleset::default()),
            ToolKind::NftJson => nft_json::parse(&text, &label),
        };
        match parsed {
            Ok(rs) => {
                reports.push(ToolReport {
                    tool: label,
                    ok: true,
                    skipped: out.skipped,
                    tables: rs.tables.len(),
                    error: None,
                });
                match kind {
                    ToolKind::NftJson => nft.extend(rs),
                    ToolKind::IptablesSave(_, Some(Backend::IptablesNft)) => ipt_nft.extend(rs),
                    ToolKind::IptablesSave(..) => {
                        // Without a variant binary, the header says which backend wrote it.
                        let (n, o): (Vec<_>, Vec<_>) = rs
                            .tables
                            .into_iter()
                            .partition(|t| t.backend == Backend::IptablesNft);
                        ipt_nft.tables.extend(n);
                        other.tables.extend(o);
                    }
                }
            }
            Err(e) => reports.push(ToolReport {
                tool: label,
                ok: false,
                skipped: false,
                tables: 0,
                error: Some(e.to_string()),
            }),
        }
    }
    // iptables-nft tables replace their nft listing (same family and name).
    nft.tables.retain(|t| {
        !ipt_nft
            .tables
            .iter()
            .any(|i| i.family == t.family && i.name == t.name)
    });
    let mut ruleset = Ruleset::default();
    ruleset.extend(other);
    ruleset.extend(ipt_nft);
    ruleset.extend(nft);
    Inspection {
        ruleset,
        tools: reports,
        ipv6: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netfilter::model::TableFamily;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{ExitStatus, Output};

    fn out(label: &str, stdout: &str, code: i32) -> ToolOutput {
        ToolOutput {
            command: ToolCommand {
                label: label.into(),
                program: label.into(),
                args: vec![],
                only_if_nonempty: None,
            },
            output: Ok(Output {
                status: ExitStatus::from_raw(code << 8),
                stdout: stdout.as_bytes().to_vec(),
                stderr: b"iptables: permission denied\n".to_vec(),
            }),
            skipped: false,
        }
    }

    #[test]
    fn iptables_nft_replaces_its_nft_listing() {
        let nft = r#"{"nftables":[{"table":{"family":"ip","name":"nat"}},
            {"chain":{"family":"ip","table":"nat","name":"OUTPUT","type":"nat","hook":"output","prio":-100,"policy":"accept"}},
            {"rule":{"family":"ip","table":"nat","chain":"OUTPUT","expr":[{"xt":{"type":"match","name":"owner"}},{"return":null}]}},
            {"table":{"family":"inet","name":"evil"}}]}"#;
        let ipt = "# Generated by iptables-nft-save v1.8.9 (nf_tables)\n*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -m owner --uid-owner 0 -j RETURN\nCOMMIT\n";
        let legacy = "# Generated by iptables-save v1.8.9\n*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
        let i = assemble(
            &[
                out("iptables-legacy-save", legacy, 0),
                out("iptables-nft-save", ipt, 0),
                out("ip6tables-nft-save", "", 1),
                out("nft -j list ruleset", nft, 0),
            ],
            &[
                ToolKind::IptablesSave(IpFamily::V4, Some(Backend::IptablesLegacy)),
                ToolKind::IptablesSave(IpFamily::V4, Some(Backend::IptablesNft)),
                ToolKind::IptablesSave(IpFamily::V6, Some(Backend::IptablesNft)),
                ToolKind::NftJson,
            ],
        );
        let tables: Vec<(TableFamily, String, Backend)> = i
            .ruleset
            .tables
            .iter()
            .map(|t| (t.family.clone(), t.name.clone(), t.backend))
            .collect();
        assert_eq!(
            tables,
            vec![
                (TableFamily::Ip, "nat".into(), Backend::IptablesLegacy),
                (TableFamily::Ip, "nat".into(), Backend::IptablesNft),
                (TableFamily::Inet, "evil".into(), Backend::Nftables),
            ]
        );
        assert!(i.any_tool_ok());
        assert_eq!(i.errors().len(), 1);
        assert!(
            i.errors()[0].contains("permission denied"),
            "{:?}",
            i.errors()
        );
    }
}
