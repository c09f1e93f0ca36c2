//! Checks for names that become part of Envoy stat names (policy and rate-limit names).
//!
//! Envoy names a module's counter `wasmcustom.<name>` and runs every stat name through the tag
//! extractors of its bootstrap (`stats_config.stats_tags`): each regex that matches removes its
//! first capture group from the name and makes the second a tag value. Istio's bootstrap
//! (`tools/packaging/common/envoy_bootstrap.json`) has unanchored extractors that apply to
//! custom stats too; a name segment that one of them matches would silently rewrite the
//! counter (e.g. `egress_filter.policy.x-cache.dry_run.deny` loses `cache.dry_run.` to
//! `(cache\.(.+?)\.)`). Names are segments between dots, so a `.` inside one would also shift
//! every dot-based extractor: names have none. Prometheus output turns `-` into `_`, so two
//! names that differ only there would be one metric.

/// The suffixes and prefixes of a name segment that Istio's default unanchored tag extractors
/// match, with the extractor they trigger.
const SUFFIXES: [(&str, &str); 3] = [
    ("cache", r"(cache\.(.+?)\.)"),
    ("component", r"(component\.(.+?)\.)"),
    ("wasm_filter", r"(wasm_filter\.(.+?)\.)"),
];
const PREFIXES: [(&str, &str); 4] = [
    ("shadow_allowed", r"(\.shadow_(allowed|denied))"),
    ("shadow_denied", r"(\.shadow_(allowed|denied))"),
    ("istio_dry_run_allow_", r"(\.istio_dry_run_(allow|deny)_)"),
    ("istio_dry_run_deny_", r"(\.istio_dry_run_(allow|deny)_)"),
];

/// Why Istio's default tag extraction would rewrite a counter whose name has this segment, or
/// `None` when it leaves it alone. The segment is followed by `.` and another segment in every
/// counter the filter defines.
pub fn tag_extraction_clash(segment: &str) -> Option<String> {
    let lower = segment.to_ascii_lowercase();
    let hit = SUFFIXES
        .iter()
        .find(|(suffix, _)| lower.ends_with(suffix))
        .or_else(|| {
            PREFIXES
                .iter()
                .find(|(prefix, _)| lower.starts_with(prefix))
        });
    hit.map(|(_, regex)| {
        format!(
            "Istio's default stats tag extractor {regex} would rewrite the metric names it is part of"
        )
    })
}

/// The name as Envoy's Prometheus output writes it (every character outside `[a-zA-Z0-9_]`
/// becomes `_`).
pub fn prometheus_form(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_istio_would_rewrite() {
        for clash in [
            "x-cache",
            "component",
            "my-wasm_filter",
            "shadow_allowed-a",
            "shadow_denied",
            "istio_dry_run_allow_x",
            "Istio_Dry_Run_Deny_x",
        ] {
            assert!(tag_extraction_clash(clash).is_some(), "{clash}");
        }
        for fine in [
            "allow-ci-github",
            "cache-reads",
            "per-workload",
            "shadow",
            "istio",
        ] {
            assert_eq!(tag_extraction_clash(fine), None, "{fine}");
        }
    }

    #[test]
    fn prometheus_forms() {
        assert_eq!(prometheus_form("ci-github"), "ci_github");
        assert_eq!(prometheus_form("ci_github"), "ci_github");
    }
}
