//! Property tests: matchers and parsers never panic on any input, agree with the obvious
//! definition of their patterns, and normalisation is idempotent.

mod common;

use egress_filter::config::json;
use egress_filter::gather::HeaderList;
use egress_filter::matchers::host::{normalize_host, normalize_sni};
use egress_filter::matchers::{
    CidrSet, HostMatcher, HostPattern, IpBlock, PathMatcher, PathPattern, StringMatcher,
    StringPattern,
};
use egress_filter::normalize::normalize_path;
use egress_filter::CompiledConfig;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr};

/// Host-like text from a small alphabet, so patterns and hosts actually overlap.
fn host_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        proptest::sample::select(vec!["a", "b", "ab", "c-d", "x1"]),
        1..5,
    )
    .prop_map(|labels| labels.join("."))
}

fn host_pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        host_text(),
        host_text().prop_map(|h| format!("*.{h}")),
        host_text().prop_map(|h| format!("*{h}")),
        host_text().prop_map(|h| format!("{h}*")),
        Just("*".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn normalize_path_never_panics_and_is_idempotent(path in ".{0,60}") {
        if let Ok(once) = normalize_path(&path) {
            let twice = normalize_path(&once).expect("normalised path normalises again");
            prop_assert_eq!(&twice, &once);
            prop_assert!(!once.contains('?'));
            if once.starts_with('/') {
                prop_assert!(!once.split('/').any(|s| s == "." || s == ".."), "{}", once);
            }
        }
    }

    #[test]
    fn normalize_path_resolves_dot_segments(segments in proptest::collection::vec(proptest::sample::select(vec!["a", "b", ".", "..", "%2e%2e", "%2E", "", "c%41", "\\.."]), 0..8)) {
        let path = format!("/{}", segments.join("/"));
        let normalized = match normalize_path(&path) {
            Ok(normalized) => normalized,
            Err(error) => {
                // Only an empty segment (`\` is `/`) can make these paths resolve differently
                // once slashes are merged.
                prop_assert_eq!(error, egress_filter::normalize::PathError::Ambiguous);
                prop_assert!(segments.iter().any(|s| s.is_empty() || s.starts_with('\\')), "{}", path);
                return Ok(());
            }
        };
        prop_assert!(normalized.starts_with('/'));
        prop_assert!(!normalized.split('/').any(|s| s == "." || s == ".."), "{} -> {}", path, normalized);
    }

    #[test]
    fn normalize_host_never_panics_and_is_idempotent(authority in ".{0,40}") {
        if let Ok(host) = normalize_host(&authority) {
            prop_assert_eq!(normalize_host(&host).unwrap(), host.clone());
            prop_assert!(!host.ends_with('.'));
            prop_assert_eq!(host.to_ascii_lowercase(), host);
        }
        let _ = normalize_sni(&authority);
    }

    #[test]
    fn host_matcher_agrees_with_patterns(patterns in proptest::collection::vec(host_pattern(), 1..8), host in host_text()) {
        let parsed: Vec<HostPattern> = patterns.iter().map(|p| HostPattern::parse(p).unwrap()).collect();
        let matcher = HostMatcher::new(&parsed);
        let expected = parsed.iter().any(|p| p.matches(&host));
        prop_assert_eq!(matcher.matches(&host), expected, "{:?} vs {}", parsed, host);
    }

    #[test]
    fn host_matcher_never_panics(patterns in proptest::collection::vec(".{0,20}", 0..6), host in ".{0,40}") {
        let parsed: Vec<HostPattern> = patterns.iter().filter_map(|p| HostPattern::parse(p).ok()).collect();
        let matcher = HostMatcher::new(&parsed);
        let _ = matcher.matches(&host);
    }

    #[test]
    fn string_matcher_agrees_with_patterns(patterns in proptest::collection::vec("[ab]{0,3}\\*?|\\*[ab]{0,3}", 1..6), value in "[ab]{0,4}") {
        let parsed: Vec<StringPattern> = patterns.iter().filter_map(|p| StringPattern::parse(p).ok()).collect();
        let matcher = StringMatcher::new(&parsed);
        let expected = parsed.iter().any(|p| p.matches(&value));
        prop_assert_eq!(matcher.matches(&value), expected);
    }

    #[test]
    fn path_matcher_never_panics(patterns in proptest::collection::vec("(/([a-z]{1,3}|\\{\\*\\}|\\{\\*\\*\\}|\\*)){1,4}", 1..4), path in ".{0,40}") {
        let parsed: Vec<PathPattern> = patterns.iter().filter_map(|p| PathPattern::parse(p).ok()).collect();
        let matcher = PathMatcher::new(&parsed);
        let _ = matcher.matches(&path);
        let expected = parsed.iter().any(|p| p.matches(&path));
        prop_assert_eq!(matcher.matches(&path), expected);
    }

    #[test]
    fn cidr_set_agrees_with_blocks(blocks in proptest::collection::vec((any::<u32>(), 0u8..=32), 0..12), probe in any::<u32>()) {
        let parsed: Vec<IpBlock> = blocks
            .iter()
            .map(|(addr, len)| IpBlock::parse(&format!("{}/{}", Ipv4Addr::from(*addr), len)).unwrap())
            .collect();
        let set = CidrSet::new(&parsed);
        // Probe near the blocks too, not only at random.
        let probes = [probe, blocks.first().map_or(probe, |b| b.0), blocks.first().map_or(probe, |b| b.0 ^ 1)];
        for p in probes {
            let ip = IpAddr::V4(Ipv4Addr::from(p));
            prop_assert_eq!(set.contains(ip), parsed.iter().any(|b| b.contains(ip)));
        }
    }

    #[test]
    fn config_parser_never_panics(text in ".{0,200}") {
        let _ = CompiledConfig::from_json(text.as_bytes());
    }

    #[test]
    fn config_parser_never_panics_on_jsonish(text in "[\\[\\]{}\",:a-z0-9 *./\\\\-]{0,200}") {
        let _ = json::parse(text.as_bytes());
        let _ = CompiledConfig::from_json(text.as_bytes());
    }

    #[test]
    fn header_map_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Some(list) = HeaderList::decode(bytes) {
            prop_assert_eq!(list.pairs().len(), list.len());
        }
    }

    #[test]
    fn evaluation_never_panics(method in "[A-Z]{0,7}", authority in ".{0,30}", path in ".{0,40}", header in ".{0,20}") {
        let config = CompiledConfig::from_json(include_bytes!("../../examples/egress-policy.json")).unwrap();
        let req = common::http(&method, "x", "/").header("x-team", &header);
        let mut req = req;
        if let Some(http) = req.http.as_mut() {
            http.authority = Some(authority.clone());
            http.path = path.clone();
        }
        // Malformed requests are refused before evaluation; the rest must evaluate.
        let headers: Vec<(&str, &str)> = vec![("x-team", header.as_str())];
        let head = egress_filter::RequestHead {
            authority: Some(&authority),
            method: Some(&method),
            path: Some(&path),
            headers: &headers,
            ..Default::default()
        };
        if egress_filter::HttpAttributes::from_request(&head, config.policy.header_names()).is_ok() {
            let attrs = req.attributes(config.policy.header_names());
            let decision = config.policy.evaluate(&attrs);
            let line = egress_filter::log::decision_line(egress_filter::TrafficKind::Http, &decision, Some(&attrs));
            prop_assert!(json::parse(line.as_bytes()).is_ok(), "{}", line);
        }
    }
}
