//! Netfilter judge: reads a pod network namespace's iptables/nftables rules (any of
//! `iptables-save`, `nft list ruleset`, `nft -j list ruleset`) into one [`model::Ruleset`], runs
//! probe packets through it ([`sim`]) and compares what happens with what the pod's
//! [`crate::capture::CaptureConfig`] allows ([`judge`]).

pub mod addr;
pub mod dump;
pub mod error;
pub mod iptables;
pub mod judge;
pub mod model;
pub mod nft_json;
pub mod nft_text;
pub mod sim;

pub use addr::{IpFamily, IpNet};
pub use dump::DumpFormat;
pub use error::DumpError;
pub use judge::{judge, JudgeContext, Subject};
pub use model::{Backend, Ruleset};

/// Parses one rule in the dialect of the table it goes into: iptables options
/// (`-d 10.0.0.0/8 -j RETURN`) or nft statements (`ip daddr 10.0.0.0/8 return`). For tools and
/// tests that edit a parsed ruleset.
pub fn parse_rule(iptables_dialect: bool, text: &str) -> Result<model::Rule, String> {
    if iptables_dialect {
        let tokens = iptables::tokenize(text)?;
        let (matches, effects, verdict) = iptables::parse_rule_args(&tokens)?;
        Ok(model::Rule {
            matches,
            effects,
            verdict,
            text: text.to_string(),
            line: 0,
        })
    } else {
        nft_text::parse_rule_text(text, 0)
    }
}
