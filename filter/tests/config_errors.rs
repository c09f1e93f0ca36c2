//! Malformed configurations: each is refused with the JSON path of the offending value and a
//! message saying what is wrong.

use egress_filter::CompiledConfig;

struct Bad {
    name: &'static str,
    json: &'static str,
    path: &'static str,
    message: &'static str,
}

const fn bad(
    name: &'static str,
    json: &'static str,
    path: &'static str,
    message: &'static str,
) -> Bad {
    Bad {
        name,
        json,
        path,
        message,
    }
}

const CASES: &[Bad] = &[
    bad("empty_document", "  \n", "$", "configuration is empty"),
    bad(
        "not_json",
        "{policies: []}",
        "$",
        "invalid JSON at line 1 column 2: expected a key in double quotes",
    ),
    bad(
        "truncated_json",
        r#"{"policies":[{"name":"a""#,
        "policies[0]",
        "invalid JSON at line 1 column 25: expected `,` or `}`",
    ),
    bad(
        "trailing_garbage",
        r#"{"policies":[]} x"#,
        "$",
        "trailing characters after the JSON value",
    ),
    bad(
        "duplicate_key",
        r#"{"policies":[{"name":"a","name":"b"}]}"#,
        "policies[0]",
        "duplicate key \"name\"",
    ),
    bad(
        "top_level_not_object",
        "[]",
        "$",
        "expected an object, found a list",
    ),
    bad(
        "unknown_top_level_key",
        r#"{"policies":[],"rateLimitz":[]}"#,
        "rateLimitz",
        "unknown field `rateLimitz`, expected one of `policies`",
    ),
    bad(
        "policies_not_a_list",
        r#"{"policies":{}}"#,
        "policies",
        "expected a list, found an object",
    ),
    bad(
        "unknown_policy_field",
        r#"{"policies":[{"name":"a","selector":{}}]}"#,
        "policies[0].selector",
        "unknown field `selector`, expected one of `name`, `action`, `rules`, `dryRun`",
    ),
    bad(
        "missing_name",
        r#"{"policies":[{"action":"DENY"}]}"#,
        "policies[0]",
        "missing field `name`",
    ),
    bad(
        "empty_name",
        r#"{"policies":[{"name":""}]}"#,
        "policies[0].name",
        "policy name must not be empty",
    ),
    bad(
        "name_with_dot",
        r#"{"policies":[{"name":"allow.github"}]}"#,
        "policies[0].name",
        "policy name \"allow.github\" may only contain letters, digits, `-` and `_`",
    ),
    bad(
        "duplicate_names",
        r#"{"policies":[{"name":"a"},{"name":"a"}]}"#,
        "policies[1].name",
        "duplicate policy name \"a\"",
    ),
    bad(
        "custom_action",
        r#"{"policies":[{"name":"a","action":"CUSTOM","rules":[{}]}]}"#,
        "policies[0].action",
        "action \"CUSTOM\" is not supported",
    ),
    bad(
        "lowercase_action",
        r#"{"policies":[{"name":"a","action":"deny","rules":[{}]}]}"#,
        "policies[0].action",
        "action \"deny\" is not one of ALLOW, DENY, AUDIT",
    ),
    bad(
        "dry_run_not_bool",
        r#"{"policies":[{"name":"a","dryRun":"yes"}]}"#,
        "policies[0].dryRun",
        "expected a boolean, found a string",
    ),
    bad(
        "deny_without_rules",
        r#"{"policies":[{"name":"a","action":"DENY"}]}"#,
        "policies[0]",
        "a DENY policy without `rules` never matches",
    ),
    bad(
        "unknown_rule_field",
        r#"{"policies":[{"name":"a","rules":[{"form":[]}]}]}"#,
        "policies[0].rules[0].form",
        "unknown field `form`, expected one of `from`, `to`, `when`",
    ),
    bad(
        "empty_from",
        r#"{"policies":[{"name":"a","rules":[{"from":[]}]}]}"#,
        "policies[0].rules[0].from",
        "`from` must not be empty",
    ),
    bad(
        "from_without_source",
        r#"{"policies":[{"name":"a","rules":[{"from":[{}]}]}]}"#,
        "policies[0].rules[0].from[0]",
        "`from.source` must be set",
    ),
    bad(
        "empty_source",
        r#"{"policies":[{"name":"a","rules":[{"from":[{"source":{}}]}]}]}"#,
        "policies[0].rules[0].from[0].source",
        "`from.source` must not be empty",
    ),
    bad(
        "empty_to",
        r#"{"policies":[{"name":"a","rules":[{"to":[]}]}]}"#,
        "policies[0].rules[0].to",
        "`to` must not be empty",
    ),
    bad(
        "empty_operation",
        r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{}}]}]}]}"#,
        "policies[0].rules[0].to[0].operation",
        "`to.operation` must not be empty",
    ),
    bad(
        "unknown_operation_field",
        r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"host":["x"]}}]}]}]}"#,
        "policies[0].rules[0].to[0].operation.host",
        "unknown field `host`",
    ),
    bad(
        "port_is_a_name",
        r#"{"policies":[{"name":"a"},{"name":"b"},{"name":"c","rules":[{"to":[{"operation":{"ports":["443","https"]}}]}]}]}"#,
        "policies[2].rules[0].to[0].operation.ports[1]",
        "\"https\" is not a port",
    ),
    bad(
        "port_out_of_range",
        r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"notPorts":[70000]}}]}]}]}"#,
        "policies[0].rules[0].to[0].operation.notPorts[0]",
        "70000 is not a port",
    ),
    bad(
        "port_float",
        r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"ports":[443.5]}}]}]}]}"#,
        "policies[0].rules[0].to[0].operation.ports[0]",
        "expected a string or an integer, found a number",
    ),
    bad(
        "cidr_prefix_too_long",
        r#"{"policies":[{"name":"a","rules":[{"from":[{"source":{"ipBlocks":["10.0.0.0/33"]}}]}]}]}"#,
        "policies[0].rules[0].from[0].source.ipBlocks[0]",
        "\"10.0.0.0/33\": prefix length must be at most 32",
    ),
    bad(
        "bad_ip",
        r#"{"policies":[{"name":"a","rules":[{"from":[{"source":{"notRemoteIpBlocks":["10.0.0.256"]}}]}]}]}"#,
        "policies[0].rules[0].from[0].source.notRemoteIpBlocks[0]",
        "\"10.0.0.256\" is not an IP address or CIDR block",
    ),
    bad(
        "wildcard_in_middle_host",
        r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"hosts":["api.*.example"]}}]}]}]}"#,
        "policies[0].rules[0].to[0].operation.hosts[0]",
        "\"api.*.example\": `*` is only allowed as the first or the last character",
    ),
    bad(
        "host_with_port",
        r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"hosts":["example.com:8443"]}}]}]}]}"#,
        "policies[0].rules[0].to[0].operation.hosts[0]",
        "hosts are matched without their port",
    ),
    bad(
        "empty_string_value",
        r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"methods":["GET",""]}}]}]}]}"#,
        "policies[0].rules[0].to[0].operation.methods[1]",
        "empty value is not allowed",
    ),
    bad(
        "wildcard_in_middle_principal",
        r#"{"policies":[{"name":"a","rules":[{"from":[{"source":{"principals":["cluster.local/*/sa/x"]}}]}]}]}"#,
        "policies[0].rules[0].from[0].source.principals[0]",
        "`*` is only allowed as the first or the last character",
    ),
    bad(
        "any_template_not_last",
        r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"paths":["/{**}/x/{*}"]}}]}]}]}"#,
        "policies[0].rules[0].to[0].operation.paths[0]",
        "`{**}` must be the last operator of a path template",
    ),
    bad(
        "template_not_whole_segment",
        r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"notPaths":["/files/{*}.txt"]}}]}]}]}"#,
        "policies[0].rules[0].to[0].operation.notPaths[0]",
        "must each fill a whole path segment",
    ),
    bad(
        "star_in_template",
        r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"paths":["/*/x/{*}"]}}]}]}]}"#,
        "policies[0].rules[0].to[0].operation.paths[0]",
        "segment \"*\" holds characters not allowed in a path template",
    ),
    bad(
        "unknown_when_key",
        r#"{"policies":[{"name":"a","rules":[{"when":[{"key":"request.host","values":["x"]}]}]}]}"#,
        "policies[0].rules[0].when[0].key",
        "unknown attribute \"request.host\"",
    ),
    bad(
        "when_without_values",
        r#"{"policies":[{"name":"a","rules":[{"when":[{"key":"source.ip"}]}]}]}"#,
        "policies[0].rules[0].when[0]",
        "at least one of `values` or `notValues` must be set for key \"source.ip\"",
    ),
    bad(
        "when_with_empty_values",
        r#"{"policies":[{"name":"a","rules":[{"when":[{"key":"source.ip","values":[],"notValues":[]}]}]}]}"#,
        "policies[0].rules[0].when[0]",
        "at least one of `values` or `notValues` must be set",
    ),
    bad(
        "when_bad_header_key",
        r#"{"policies":[{"name":"a","rules":[{"when":[{"key":"request.headers[]","values":["x"]}]}]}]}"#,
        "policies[0].rules[0].when[0].key",
        "bad key \"request.headers[]\"",
    ),
    bad(
        "when_bad_cidr",
        r#"{"policies":[{"name":"a","rules":[{"when":[{"key":"destination.ip","notValues":["10.0.0.0/8","nope"]}]}]}]}"#,
        "policies[0].rules[0].when[0].notValues[1]",
        "\"nope\" is not an IP address or CIDR block",
    ),
    bad(
        "when_bad_port",
        r#"{"policies":[{"name":"a","rules":[{"when":[{"key":"destination.port","values":["0"]}]}]}]}"#,
        "policies[0].rules[0].when[0].values[0]",
        "\"0\" is not a port",
    ),
    bad(
        "when_value_wrong_type",
        r#"{"policies":[{"name":"a","rules":[{"when":[{"key":"source.namespace","values":[true]}]}]}]}"#,
        "policies[0].rules[0].when[0].values[0]",
        "expected a string or an integer, found a boolean",
    ),
    bad(
        "request_auth_unsupported",
        r#"{"policies":[{"name":"a","rules":[{"when":[{"key":"request.auth.claims[iss]","values":["x"]}]}]}]}"#,
        "policies[0].rules[0].when[0].key",
        "`request.auth.claims[iss]` is not supported by the egress filter",
    ),
    bad(
        "request_principals_unsupported",
        r#"{"policies":[{"name":"a","rules":[{"from":[{"source":{"requestPrincipals":["*"]}}]}]}]}"#,
        "policies[0].rules[0].from[0].source.requestPrincipals",
        "`requestPrincipals` is not supported by the egress filter",
    ),
    bad(
        "hosts_not_strings",
        r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"hosts":"github.com"}}]}]}]}"#,
        "policies[0].rules[0].to[0].operation.hosts",
        "expected a list, found a string",
    ),
    bad(
        "tiers_with_policies",
        r#"{"policies":[],"tiers":{}}"#,
        "$",
        "`policies` and `tiers` cannot be used together",
    ),
    bad(
        "tiers_unknown_tier",
        r#"{"tiers":{"admn":[]}}"#,
        "tiers.admn",
        "unknown field `admn`, expected one of `admin`, `namespaces`, `baseline`, `default`",
    ),
    bad(
        "tiers_not_an_object",
        r#"{"tiers":[]}"#,
        "tiers",
        "expected an object, found a list",
    ),
    bad(
        "tiers_pass_in_baseline",
        r#"{"tiers":{"baseline":[{"name":"b","priority":1,"rules":[{"action":"ALLOW"},{"action":"PASS"}]}]}}"#,
        "tiers.baseline[0].rules[1].action",
        "PASS is only allowed in the admin tier",
    ),
    bad(
        "tiers_pass_in_namespace",
        r#"{"tiers":{"namespaces":{"team-a":[{"name":"p","action":"PASS","rules":[{}]}]}}}"#,
        "tiers.namespaces.team-a[0].action",
        "PASS is only allowed in the admin tier",
    ),
    bad(
        "tiers_unknown_rule_action",
        r#"{"tiers":{"admin":[{"name":"a","priority":1,"rules":[{"action":"AUDIT"}]}]}}"#,
        "tiers.admin[0].rules[0].action",
        "action \"AUDIT\" is not one of ALLOW, DENY, PASS",
    ),
    bad(
        "tiers_baseline_action_list",
        r#"{"tiers":{"baseline":[{"name":"a","priority":1,"rules":[{"action":"allow"}]}]}}"#,
        "tiers.baseline[0].rules[0].action",
        "action \"allow\" is not one of ALLOW, DENY",
    ),
    bad(
        "tiers_rule_without_action",
        r#"{"tiers":{"admin":[{"name":"a","priority":1,"rules":[{"to":[{"operation":{"ports":["443"]}}]}]}]}}"#,
        "tiers.admin[0].rules[0]",
        "missing field `action`",
    ),
    bad(
        "tiers_missing_priority",
        r#"{"tiers":{"admin":[{"name":"a","rules":[{"action":"ALLOW"}]}]}}"#,
        "tiers.admin[0]",
        "missing field `priority`",
    ),
    bad(
        "tiers_priority_too_high",
        r#"{"tiers":{"baseline":[{"name":"a","priority":1001,"rules":[{"action":"ALLOW"}]}]}}"#,
        "tiers.baseline[0].priority",
        "priority must be in 0..=1000",
    ),
    bad(
        "tiers_negative_priority",
        r#"{"tiers":{"admin":[{"name":"a","priority":-1,"rules":[{"action":"ALLOW"}]}]}}"#,
        "tiers.admin[0].priority",
        "-1 is not an integer",
    ),
    bad(
        "tiers_priority_not_a_number",
        r#"{"tiers":{"admin":[{"name":"a","priority":"10","rules":[{"action":"ALLOW"}]}]}}"#,
        "tiers.admin[0].priority",
        "expected an integer, found a string",
    ),
    bad(
        "tiers_duplicate_name_in_tier",
        r#"{"tiers":{"admin":[{"name":"a","priority":1,"rules":[{"action":"ALLOW"}]},{"name":"a","priority":1,"rules":[{"action":"DENY"}]}]}}"#,
        "tiers.admin[1].name",
        "duplicate policy name \"a\"",
    ),
    bad(
        "tiers_duplicate_name_in_namespace",
        r#"{"tiers":{"namespaces":{"team-a":[{"name":"p","rules":[{}]},{"name":"p","action":"DENY","rules":[{}]}]}}}"#,
        "tiers.namespaces.team-a[1].name",
        "duplicate policy name \"p\"",
    ),
    bad(
        "tiers_duplicate_rule_name",
        r#"{"tiers":{"admin":[{"name":"a","priority":1,"rules":[{"name":"r","action":"ALLOW"},{"name":"r","action":"DENY"}]}]}}"#,
        "tiers.admin[0].rules[1].name",
        "duplicate rule name \"r\" in this policy",
    ),
    bad(
        "tiers_bad_rule_name",
        r#"{"tiers":{"admin":[{"name":"a","priority":1,"rules":[{"name":"r.1","action":"ALLOW"}]}]}}"#,
        "tiers.admin[0].rules[0].name",
        "rule name \"r.1\" may only contain letters, digits, `-` and `_`",
    ),
    bad(
        "tiers_no_rules",
        r#"{"tiers":{"admin":[{"name":"a","priority":1,"rules":[]}]}}"#,
        "tiers.admin[0].rules",
        "a tier policy needs at least one rule",
    ),
    bad(
        "tiers_missing_rules",
        r#"{"tiers":{"baseline":[{"name":"a","priority":1}]}}"#,
        "tiers.baseline[0]",
        "missing field `rules`",
    ),
    bad(
        "tiers_namespace_not_dns_label",
        r#"{"tiers":{"namespaces":{"Team_A":[]}}}"#,
        "tiers.namespaces.Team_A",
        "namespace \"Team_A\" is not a DNS label",
    ),
    bad(
        "tiers_namespace_too_long",
        r#"{"tiers":{"namespaces":{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":[]}}}"#,
        "tiers.namespaces.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "is not a DNS label",
    ),
    bad(
        "tiers_subject_not_dns_label",
        r#"{"tiers":{"admin":[{"name":"a","priority":1,"subject":{"namespaces":["ci","-ci"]},"rules":[{"action":"ALLOW"}]}]}}"#,
        "tiers.admin[0].subject.namespaces[1]",
        "namespace \"-ci\" is not a DNS label",
    ),
    bad(
        "tiers_subject_without_namespaces",
        r#"{"tiers":{"admin":[{"name":"a","priority":1,"subject":{},"rules":[{"action":"ALLOW"}]}]}}"#,
        "tiers.admin[0].subject",
        "missing field `namespaces`",
    ),
    bad(
        "tiers_subject_unknown_field",
        r#"{"tiers":{"admin":[{"name":"a","priority":1,"subject":{"namespaceSelector":{}},"rules":[{"action":"ALLOW"}]}]}}"#,
        "tiers.admin[0].subject.namespaceSelector",
        "unknown field `namespaceSelector`, expected one of `namespaces`",
    ),
    bad(
        "tiers_namespace_value_not_list",
        r#"{"tiers":{"namespaces":{"team-a":{}}}}"#,
        "tiers.namespaces.team-a",
        "expected a list, found an object",
    ),
    bad(
        "tiers_default_lowercase",
        r#"{"tiers":{"default":"allow"}}"#,
        "tiers.default",
        "default \"allow\" is not one of ALLOW, DENY",
    ),
    bad(
        "tiers_default_pass",
        r#"{"tiers":{"default":"PASS"}}"#,
        "tiers.default",
        "default \"PASS\" is not one of ALLOW, DENY",
    ),
    bad(
        "tiers_action_on_tier_policy",
        r#"{"tiers":{"admin":[{"name":"a","priority":1,"action":"DENY","rules":[{"action":"DENY"}]}]}}"#,
        "tiers.admin[0].action",
        "unknown field `action`, expected one of `name`, `priority`, `subject`, `dryRun`, `rules`, `rateLimits`",
    ),
    bad(
        "tiers_priority_on_namespace_policy",
        r#"{"tiers":{"namespaces":{"team-a":[{"name":"p","priority":1}]}}}"#,
        "tiers.namespaces.team-a[0].priority",
        "unknown field `priority`, expected one of `name`, `action`, `rules`, `dryRun`, `rateLimits`",
    ),
    bad(
        "tiers_rule_limit_with_match",
        r#"{"tiers":{"admin":[{"name":"a","priority":1,"rules":[{"action":"ALLOW","rateLimit":{"name":"l","maxTokens":1,"fillInterval":"1s","match":{}}}]}]}}"#,
        "tiers.admin[0].rules[0].rateLimit.match",
        "a rule's `rateLimit` applies to the requests the rule matches: it takes no `match`",
    ),
    bad(
        "tiers_limit_on_deny_rule",
        r#"{"tiers":{"baseline":[{"name":"a","priority":1,"rules":[{"action":"DENY","rateLimit":{"name":"l","maxTokens":1,"fillInterval":"1s"}}]}]}}"#,
        "tiers.baseline[0].rules[0].rateLimit",
        "a DENY rule cannot have a `rateLimit`",
    ),
    bad(
        "tiers_duplicate_limit_name_top_level",
        r#"{"rateLimits":[{"name":"x","maxTokens":1,"fillInterval":"1s"}],"tiers":{"admin":[{"name":"a","priority":1,"rules":[{"action":"ALLOW","rateLimit":{"name":"x","maxTokens":1,"fillInterval":"1s"}}]}]}}"#,
        "tiers.admin[0].rules[0].rateLimit.name",
        "\"x\" is already used by rateLimits[0]",
    ),
    bad(
        "tiers_duplicate_limit_name_across_tiers",
        r#"{"tiers":{"admin":[{"name":"a","priority":1,"rateLimits":[{"name":"x","maxTokens":1,"fillInterval":"1s"}],"rules":[{"action":"PASS"}]}],"namespaces":{"team-a":[{"name":"p","rules":[{}],"rateLimits":[{"name":"x","maxTokens":2,"fillInterval":"1s"}]}]}}}"#,
        "tiers.namespaces.team-a[0].rateLimits[0].name",
        "\"x\" is already used by tiers.admin[0].rateLimits[0]",
    ),
    bad(
        "tiers_bad_limit_in_namespace",
        r#"{"tiers":{"namespaces":{"team-a":[{"name":"p","rules":[{}],"rateLimits":[{"name":"x","maxTokens":1,"fillInterval":"10ms"}]}]}}}"#,
        "tiers.namespaces.team-a[0].rateLimits[0].fillInterval",
        "\"10ms\" is below the 50ms minimum",
    ),
    bad(
        "tiers_bad_rule_in_admin",
        r#"{"tiers":{"admin":[{"name":"a","priority":1,"rules":[{"action":"ALLOW","to":[{"operation":{"ports":["https"]}}]}]}]}}"#,
        "tiers.admin[0].rules[0].to[0].operation.ports[0]",
        "\"https\" is not a port",
    ),
    bad(
        "tiers_bad_policy_name",
        r#"{"tiers":{"baseline":[{"name":"a.b","priority":1,"rules":[{"action":"ALLOW"}]}]}}"#,
        "tiers.baseline[0].name",
        "policy name \"a.b\" may only contain letters",
    ),
];

#[test]
fn malformed_configs_are_refused_with_a_location() {
    assert!(CASES.len() >= 20, "only {} cases", CASES.len());
    let mut failures = Vec::new();
    for case in CASES {
        match CompiledConfig::from_json(case.json.as_bytes()) {
            Ok(_) => failures.push(format!("{}: accepted", case.name)),
            Err(err) => {
                let text = err.to_string();
                if err.path.as_str() != case.path || !text.contains(case.message) {
                    failures.push(format!(
                        "{}: want `{}: ...{}...`, got `{}`",
                        case.name, case.path, case.message, text
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
    println!("{} malformed configurations refused", CASES.len());
}

#[test]
fn the_documented_example_message() {
    let json = r#"{"policies":[{"name":"a"},{"name":"b"},{"name":"c","rules":[{"to":[{"operation":{"ports":["443","https"]}}]}]}]}"#;
    let err = CompiledConfig::from_json(json.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"policies[2].rules[0].to[0].operation.ports[1]: "https" is not a port"#
    );
}

#[test]
fn valid_edge_forms_are_accepted() {
    for json in [
        r#"{}"#,
        r#"{"policies":[]}"#,
        r#"{"policies":[{"name":"allow-nothing"}]}"#,
        r#"{"policies":[{"name":"allow-nothing","rules":[]}]}"#,
        r#"{"policies":[{"name":"all","rules":[{}]}]}"#,
        r#"{"policies":[{"name":"audit-none","action":"AUDIT"}]}"#,
        r#"{"policies":[{"name":"a","rules":[{"when":[]}]}]}"#,
        r#"{"policies":[{"name":"a","action":null,"rules":[{"to":[{"operation":{"ports":[443,"8443"],"hosts":["x.com:*"]}}]}]}]}"#,
        r#"{"policies":[{"name":"a","rules":[{"when":[{"key":"request.headers[:authority]","values":["*"]}]}]}]}"#,
        r#"{"tiers":{}}"#,
        r#"{"tiers":{"admin":[],"namespaces":{},"baseline":[],"default":"ALLOW"}}"#,
        r#"{"tiers":{"namespaces":{"team-a":[],"a":[],"0-9":[]}}}"#,
        r#"{"tiers":{"admin":[{"name":"a","priority":0,"subject":{"namespaces":[]},"rules":[{"action":"PASS"}]},
                              {"name":"b","priority":1000,"rules":[{"action":"DENY","rateLimit":null}]}]}}"#,
        r#"{"tiers":{"admin":[{"name":"a","priority":1,"rules":[{"name":"x","action":"ALLOW"},{"action":"ALLOW"},{"action":"DENY"}]}],
                    "baseline":[{"name":"a","priority":1,"rules":[{"name":"x","action":"ALLOW"}]}]}}"#,
    ] {
        if let Err(err) = CompiledConfig::from_json(json.as_bytes()) {
            panic!("{json}: {err}");
        }
    }
}
