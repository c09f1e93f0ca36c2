//! Decision table: Istio AuthorizationPolicy semantics, one named case per row.

mod common;

use common::{compile, http, tcp, Req};
use egress_filter::policy::{Reason, Verdict, WouldBe};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    AllowedBy(&'static str, usize),
    AllowedNoAllowPolicies,
    DeniedBy(&'static str, usize),
    DeniedNoMatch,
}

struct Case {
    name: &'static str,
    policies: &'static str,
    req: Req,
    want: Want,
    audit: Option<Vec<&'static str>>,
    dry_run: Option<Vec<(&'static str, Option<usize>, WouldBe)>>,
}

fn case(name: &'static str, policies: &'static str, req: Req, want: Want) -> Case {
    Case {
        name,
        policies,
        req,
        want,
        audit: None,
        dry_run: None,
    }
}

impl Case {
    fn audit(mut self, audit: &[&'static str]) -> Self {
        self.audit = Some(audit.to_vec());
        self
    }
    fn dry_run(mut self, hits: &[(&'static str, Option<usize>, WouldBe)]) -> Self {
        self.dry_run = Some(hits.to_vec());
        self
    }
}

use Want::*;

const ALLOW_ALL: &str = r#"[{"name":"allow-all","rules":[{}]}]"#;
const ALLOW_NOTHING: &str = r#"[{"name":"allow-nothing"}]"#;
const ALLOW_NOTHING_EMPTY_RULES: &str = r#"[{"name":"allow-nothing","rules":[]}]"#;
const DENY_ALL: &str = r#"[{"name":"deny-all","action":"DENY","rules":[{}]}]"#;
const DENY_EVIL_ALLOW_ALL: &str = r#"[
  {"name":"allow-all","rules":[{}]},
  {"name":"deny-evil","action":"DENY","rules":[{"to":[{"operation":{"hosts":["evil.example"]}}]}]}]"#;
const AUDIT_ONLY: &str = r#"[{"name":"audit-posts","action":"AUDIT","rules":[{"to":[{"operation":{"methods":["POST"]}}]}]}]"#;
const AUDIT_AND_ALLOW_NOTHING: &str = r#"[
  {"name":"allow-nothing"},
  {"name":"audit-all","action":"AUDIT","rules":[{}]},
  {"name":"audit-posts","action":"AUDIT","rules":[{"to":[{"operation":{"methods":["POST"]}}]}]}]"#;
const TWO_ALLOWS: &str = r#"[
  {"name":"first","rules":[{"to":[{"operation":{"methods":["GET"]}}]}]},
  {"name":"second","rules":[{}]}]"#;
const THREE_RULES: &str = r#"[{"name":"p","rules":[
  {"to":[{"operation":{"methods":["PUT"]}}]},
  {"to":[{"operation":{"methods":["DELETE"]}}]},
  {"to":[{"operation":{"methods":["GET"]}}]}]}]"#;

const PRINCIPALS: &str = r#"[{"name":"ci","rules":[{"from":[{"source":{"principals":[
  "cluster.local/ns/ci/sa/runner","cluster.local/ns/build/*","*/sa/deployer"]}}]}]}]"#;
const PRINCIPAL_PRESENCE: &str =
    r#"[{"name":"mtls-only","rules":[{"from":[{"source":{"principals":["*"]}}]}]}]"#;
const DENY_PLAINTEXT: &str = r#"[{"name":"require-mtls","action":"DENY","rules":[{"from":[{"source":{"notPrincipals":["*"]}}]}]}]"#;
const NAMESPACES: &str =
    r#"[{"name":"ns","rules":[{"from":[{"source":{"namespaces":["payments","team-*"]}}]}]}]"#;
const NOT_NAMESPACES: &str =
    r#"[{"name":"not-dev","rules":[{"from":[{"source":{"notNamespaces":["dev"]}}]}]}]"#;
const IP_BLOCKS: &str = r#"[{"name":"ips","rules":[{"from":[{"source":{"ipBlocks":["1.2.3.4","5.6.7.0/24","2001:db8::/32"]}}]}]}]"#;
const NOT_IP_BLOCKS: &str = r#"[{"name":"not-ips","action":"DENY","rules":[{"from":[{"source":{"notIpBlocks":["10.0.0.0/8"]}}]}]}]"#;
const REMOTE_IP_BLOCKS: &str =
    r#"[{"name":"remote","rules":[{"from":[{"source":{"remoteIpBlocks":["10.1.0.0/16"]}}]}]}]"#;
const NOT_REMOTE_IP_BLOCKS: &str = r#"[{"name":"not-remote","rules":[{"from":[{"source":{"notRemoteIpBlocks":["10.1.0.0/16"]}}]}]}]"#;
// Istio's Source example: principal admin or dev, namespace prod or test, ip not 203.0.113.4.
const SOURCE_ANDED: &str = r#"[{"name":"src","rules":[{"from":[{"source":{
  "principals":["admin","dev"],"namespaces":["prod","test"],"notIpBlocks":["203.0.113.4"]}}]}]}]"#;
const FROM_ORED: &str = r#"[{"name":"from-or","rules":[{"from":[
  {"source":{"principals":["cluster.local/ns/ci/sa/runner"]}},{"source":{"namespaces":["payments"]}}]}]}]"#;

const HOSTS: &str = r#"[{"name":"hosts","rules":[{"to":[{"operation":{"hosts":["github.com","*.githubusercontent.com","API.Stripe.com"]}}]}]}]"#;
const DENY_EVIL: &str = r#"[{"name":"deny-evil","action":"DENY","rules":[{"to":[{"operation":{"hosts":["evil.example"]}}]}]}]"#;
const HOST_ANY_PORT: &str =
    r#"[{"name":"httpbin","rules":[{"to":[{"operation":{"hosts":["httpbin.com:*"]}}]}]}]"#;
const NOT_HOSTS: &str = r#"[{"name":"not-hosts","action":"DENY","rules":[{"to":[{"operation":{"notHosts":["*.internal.example","mirror.example"]}}]}]}]"#;
const PORTS: &str =
    r#"[{"name":"ports","rules":[{"to":[{"operation":{"ports":["443", 8443]}}]}]}]"#;
const NOT_PORTS: &str =
    r#"[{"name":"not-ports","rules":[{"to":[{"operation":{"notPorts":["80"]}}]}]}]"#;
const METHODS: &str =
    r#"[{"name":"methods","rules":[{"to":[{"operation":{"methods":["GET","HEAD","P*"]}}]}]}]"#;
const NOT_METHODS: &str = r#"[{"name":"no-delete","action":"DENY","rules":[{"to":[{"operation":{"notMethods":["GET","HEAD"]}}]}]}]"#;
const PATHS: &str =
    r#"[{"name":"paths","rules":[{"to":[{"operation":{"paths":["/exact","/api/*","*.json"]}}]}]}]"#;
const PATH_PRESENCE: &str =
    r#"[{"name":"any-path","rules":[{"to":[{"operation":{"paths":["*"]}}]}]}]"#;
// Istio's Operation example: host suffix .example.com, GET or HEAD, path not under /admin.
const OPERATION_EXAMPLE: &str = r#"[{"name":"op","rules":[{"to":[{"operation":{
  "hosts":["*.example.com"],"methods":["GET","HEAD"],"notPaths":["/admin*"]}}]}]}]"#;
const TEMPLATES: &str = r#"[{"name":"tpl","rules":[{"to":[{"operation":{"paths":["/repos/{*}/{*}/releases","/raw/{**}"]}}]}]}]"#;
const DENY_ADMIN: &str = r#"[{"name":"deny-admin","action":"DENY","rules":[{"to":[{"operation":{"paths":["/admin","/admin/*"]}}]}]}]"#;
const TO_ORED: &str = r#"[{"name":"to-or","rules":[{"to":[
  {"operation":{"methods":["GET"],"paths":["/info*"]}},{"operation":{"methods":["POST"],"paths":["/data"]}}]}]}]"#;

const WHEN_HEADER: &str = r#"[{"name":"hdr","rules":[{"when":[{"key":"request.headers[X-Team]","values":["payments","ci-*"]}]}]}]"#;
const WHEN_HEADER_NOT: &str = r#"[{"name":"hdr-not","action":"DENY","rules":[{"when":[{"key":"request.headers[x-debug]","notValues":["off"]}]}]}]"#;
const WHEN_SOURCE_IP: &str =
    r#"[{"name":"w-src","rules":[{"when":[{"key":"source.ip","values":["10.1.0.0/16"]}]}]}]"#;
const WHEN_REMOTE_IP: &str =
    r#"[{"name":"w-remote","rules":[{"when":[{"key":"remote.ip","notValues":["10.1.2.3"]}]}]}]"#;
const WHEN_NAMESPACE: &str =
    r#"[{"name":"w-ns","rules":[{"when":[{"key":"source.namespace","values":["dev"]}]}]}]"#;
const WHEN_PRINCIPAL: &str = r#"[{"name":"w-principal","rules":[{"when":[{"key":"source.principal","values":["cluster.local/ns/dev/*"]}]}]}]"#;
const WHEN_DEST_IP: &str =
    r#"[{"name":"w-dst","rules":[{"when":[{"key":"destination.ip","values":["10.0.0.0/24"]}]}]}]"#;
const WHEN_DEST_PORT: &str =
    r#"[{"name":"w-port","rules":[{"when":[{"key":"destination.port","values":["443", 8443]}]}]}]"#;
const WHEN_SNI: &str = r#"[{"name":"w-sni","rules":[{"when":[{"key":"connection.sni","values":["*.github.com","github.com"]}]}]}]"#;
const WHEN_ANDED: &str = r#"[{"name":"w-and","rules":[{"when":[
  {"key":"source.namespace","values":["dev"]},{"key":"destination.port","values":["443"]}]}]}]"#;

const TCP_ALLOW_HOSTS: &str = r#"[{"name":"http-only","rules":[{"to":[{"operation":{"hosts":["github.com"],"ports":["443"]}}]}]}]"#;
const TCP_ALLOW_PORTS: &str =
    r#"[{"name":"port-only","rules":[{"to":[{"operation":{"ports":["443"]}}]}]}]"#;
// Istio's proto example: denies all TCP traffic on 8080 because `methods` is ignored on TCP.
const TCP_DENY_POST_8080: &str = r#"[{"name":"deny-post","action":"DENY","rules":[{"to":[{"operation":{"methods":["POST"],"ports":["8080"]}}]}]}]"#;
const TCP_DENY_POST: &str = r#"[{"name":"deny-post","action":"DENY","rules":[{"to":[{"operation":{"methods":["POST"]}}]}]}]"#;
const TCP_DENY_HEADER: &str = r#"[{"name":"deny-hdr","action":"DENY","rules":[{"from":[{"source":{"namespaces":["dev"]}}],"when":[{"key":"request.headers[x-a]","values":["1"]}]}]}]"#;
const TCP_AUDIT_PATHS: &str = r#"[{"name":"audit-paths","action":"AUDIT","rules":[{"to":[{"operation":{"paths":["/x"]}}]}]}]"#;
const TCP_ALLOW_SNI: &str = r#"[{"name":"tls-github","rules":[{"from":[{"source":{"namespaces":["ci"]}}],"when":[{"key":"connection.sni","values":["github.com"]}]}]}]"#;

const DRY_DENY: &str = r#"[{"name":"try-deny","action":"DENY","dryRun":true,"rules":[{"to":[{"operation":{"hosts":["evil.example"]}}]}]}]"#;
const DRY_ALLOW_ONLY: &str = r#"[{"name":"try-allow","dryRun":true,"rules":[{"to":[{"operation":{"hosts":["github.com"]}}]}]}]"#;
const DRY_ALLOW_WITH_ENFORCED: &str = r#"[
  {"name":"allow-all","rules":[{}]},
  {"name":"try-allow","dryRun":true,"rules":[{"to":[{"operation":{"hosts":["github.com"]}}]}]}]"#;
const DRY_ALLOW_UNDER_DENY: &str = r#"[
  {"name":"deny-evil","action":"DENY","rules":[{"to":[{"operation":{"hosts":["evil.example"]}}]}]},
  {"name":"try-allow","dryRun":true,"rules":[{}]}]"#;
const DRY_AUDIT: &str = r#"[{"name":"try-audit","action":"AUDIT","dryRun":true,"rules":[{}]}]"#;

// Istio documentation example (request.auth claims left out: JWT is not supported here).
const ISTIO_ALLOW_INFO_DATA: &str = r#"[{"name":"httpbin","action":"ALLOW","rules":[{
  "from":[{"source":{"principals":["cluster.local/ns/default/sa/sleep"]}},{"source":{"namespaces":["test"]}}],
  "to":[{"operation":{"methods":["GET"],"paths":["/info*"]}},{"operation":{"methods":["POST"],"paths":["/data"]}}]}]}]"#;
const ISTIO_DENY_DEV_POST: &str = r#"[{"name":"deny-dev-post","action":"DENY","rules":[{
  "from":[{"source":{"namespaces":["dev"]}}],"to":[{"operation":{"methods":["POST"]}}]}]}]"#;
const ISTIO_INGRESS_IPS: &str = r#"[{"name":"ingress-policy","action":"ALLOW","rules":[{"from":[{"source":{"ipBlocks":["1.2.3.4","5.6.7.0/24"]}}]}]}]"#;
const ISTIO_AUDIT_PROFILE: &str = r#"[{"name":"audit-user-profile","action":"AUDIT","rules":[{"to":[{"operation":{"methods":["GET"],"paths":["/user/profile/*"]}}]}]}]"#;
// Istio's egress-gateway integration test: ALLOW by host and path for a given client.
const ISTIO_EGRESS_GATEWAY: &str = r#"[{"name":"egress","action":"ALLOW","rules":[
  {"from":[{"source":{"principals":["cluster.local/ns/a/sa/a"]}}],
   "to":[{"operation":{"hosts":["www.company.com"],"paths":["/allow"]}}]}]}]"#;

fn cases() -> Vec<Case> {
    vec![
        // --- evaluation order and empty forms ---
        case(
            "no_policies_allow_everything",
            "[]",
            http("GET", "anything.example", "/"),
            AllowedNoAllowPolicies,
        ),
        case(
            "allow_nothing_policy_denies",
            ALLOW_NOTHING,
            http("GET", "github.com", "/"),
            DeniedNoMatch,
        ),
        case(
            "allow_with_empty_rules_list_denies",
            ALLOW_NOTHING_EMPTY_RULES,
            http("GET", "github.com", "/"),
            DeniedNoMatch,
        ),
        case(
            "allow_nothing_denies_tcp_too",
            ALLOW_NOTHING,
            tcp("github.com"),
            DeniedNoMatch,
        ),
        case(
            "empty_rule_allows_all",
            ALLOW_ALL,
            http("DELETE", "x.example", "/y"),
            AllowedBy("allow-all", 0),
        ),
        case(
            "empty_rule_allows_all_tcp",
            ALLOW_ALL,
            tcp(""),
            AllowedBy("allow-all", 0),
        ),
        case(
            "deny_empty_rule_denies_all",
            DENY_ALL,
            http("GET", "github.com", "/"),
            DeniedBy("deny-all", 0),
        ),
        case(
            "deny_wins_over_allow",
            DENY_EVIL_ALLOW_ALL,
            http("GET", "evil.example", "/"),
            DeniedBy("deny-evil", 0),
        ),
        case(
            "allow_when_deny_does_not_match",
            DENY_EVIL_ALLOW_ALL,
            http("GET", "good.example", "/"),
            AllowedBy("allow-all", 0),
        ),
        case(
            "deny_only_allows_the_rest",
            DENY_EVIL,
            http("GET", "good.example", "/"),
            AllowedNoAllowPolicies,
        ),
        case(
            "audit_never_denies",
            AUDIT_ONLY,
            http("POST", "x.example", "/"),
            AllowedNoAllowPolicies,
        )
        .audit(&["audit-posts"]),
        case(
            "audit_not_matching_is_not_listed",
            AUDIT_ONLY,
            http("GET", "x.example", "/"),
            AllowedNoAllowPolicies,
        )
        .audit(&[]),
        case(
            "audit_never_allows",
            AUDIT_AND_ALLOW_NOTHING,
            http("POST", "x.example", "/"),
            DeniedNoMatch,
        )
        .audit(&["audit-all", "audit-posts"]),
        case(
            "audit_policies_do_not_count_as_allow",
            AUDIT_ONLY,
            tcp("x.example"),
            AllowedNoAllowPolicies,
        ),
        case(
            "first_matching_allow_policy_decides",
            TWO_ALLOWS,
            http("GET", "x.example", "/"),
            AllowedBy("first", 0),
        ),
        case(
            "later_allow_policy_matches",
            TWO_ALLOWS,
            http("POST", "x.example", "/"),
            AllowedBy("second", 0),
        ),
        case(
            "rule_index_is_reported",
            THREE_RULES,
            http("GET", "x.example", "/"),
            AllowedBy("p", 2),
        ),
        case(
            "no_rule_matches",
            THREE_RULES,
            http("POST", "x.example", "/"),
            DeniedNoMatch,
        ),
        // --- source ---
        case(
            "principal_exact",
            PRINCIPALS,
            http("GET", "a", "/").principal("cluster.local/ns/ci/sa/runner"),
            AllowedBy("ci", 0),
        ),
        case(
            "principal_prefix",
            PRINCIPALS,
            http("GET", "a", "/").principal("cluster.local/ns/build/sa/x"),
            AllowedBy("ci", 0),
        ),
        case(
            "principal_suffix",
            PRINCIPALS,
            http("GET", "a", "/").principal("other.td/ns/ops/sa/deployer"),
            AllowedBy("ci", 0),
        ),
        case(
            "principal_mismatch",
            PRINCIPALS,
            http("GET", "a", "/").principal("cluster.local/ns/ci/sa/runner2"),
            DeniedNoMatch,
        ),
        case(
            "principal_presence_matches_mtls",
            PRINCIPAL_PRESENCE,
            http("GET", "a", "/"),
            AllowedBy("mtls-only", 0),
        ),
        case(
            "principal_presence_fails_plaintext",
            PRINCIPAL_PRESENCE,
            http("GET", "a", "/").plaintext(),
            DeniedNoMatch,
        ),
        case(
            "not_principals_presence_denies_plaintext",
            DENY_PLAINTEXT,
            http("GET", "a", "/").plaintext(),
            DeniedBy("require-mtls", 0),
        ),
        case(
            "not_principals_presence_lets_mtls_through",
            DENY_PLAINTEXT,
            http("GET", "a", "/"),
            AllowedNoAllowPolicies,
        ),
        case(
            "namespace_exact",
            NAMESPACES,
            http("GET", "a", "/").principal("cluster.local/ns/payments/sa/api"),
            AllowedBy("ns", 0),
        ),
        case(
            "namespace_prefix",
            NAMESPACES,
            http("GET", "a", "/").principal("cluster.local/ns/team-blue/sa/x"),
            AllowedBy("ns", 0),
        ),
        case(
            "namespace_mismatch",
            NAMESPACES,
            http("GET", "a", "/"),
            DeniedNoMatch,
        ),
        case(
            "namespace_needs_identity",
            NAMESPACES,
            http("GET", "a", "/").plaintext(),
            DeniedNoMatch,
        ),
        case(
            "not_namespaces_excludes",
            NOT_NAMESPACES,
            http("GET", "a", "/"),
            DeniedNoMatch,
        ),
        case(
            "not_namespaces_admits_others",
            NOT_NAMESPACES,
            http("GET", "a", "/").principal("cluster.local/ns/prod/sa/x"),
            AllowedBy("not-dev", 0),
        ),
        case(
            "not_namespaces_admits_plaintext",
            NOT_NAMESPACES,
            http("GET", "a", "/").plaintext(),
            AllowedBy("not-dev", 0),
        ),
        case(
            "ip_block_single",
            IP_BLOCKS,
            http("GET", "a", "/").source_ip("1.2.3.4"),
            AllowedBy("ips", 0),
        ),
        case(
            "ip_block_cidr",
            IP_BLOCKS,
            http("GET", "a", "/").source_ip("5.6.7.200"),
            AllowedBy("ips", 0),
        ),
        case(
            "ip_block_ipv6",
            IP_BLOCKS,
            http("GET", "a", "/").source_ip("2001:db8::7"),
            AllowedBy("ips", 0),
        ),
        case(
            "ip_block_ipv4_mapped",
            IP_BLOCKS,
            http("GET", "a", "/").source_ip("::ffff:5.6.7.8"),
            AllowedBy("ips", 0),
        ),
        case(
            "ip_block_mismatch",
            IP_BLOCKS,
            http("GET", "a", "/").source_ip("5.6.8.1"),
            DeniedNoMatch,
        ),
        case(
            "not_ip_blocks_denies_outside",
            NOT_IP_BLOCKS,
            http("GET", "a", "/").source_ip("192.168.0.1"),
            DeniedBy("not-ips", 0),
        ),
        case(
            "not_ip_blocks_passes_inside",
            NOT_IP_BLOCKS,
            http("GET", "a", "/").source_ip("10.9.9.9"),
            AllowedNoAllowPolicies,
        ),
        case(
            "remote_ip_blocks",
            REMOTE_IP_BLOCKS,
            http("GET", "a", "/"),
            AllowedBy("remote", 0),
        ),
        case(
            "remote_ip_blocks_mismatch",
            REMOTE_IP_BLOCKS,
            http("GET", "a", "/").source_ip("10.2.0.1"),
            DeniedNoMatch,
        ),
        case(
            "not_remote_ip_blocks",
            NOT_REMOTE_IP_BLOCKS,
            http("GET", "a", "/").source_ip("10.2.0.1"),
            AllowedBy("not-remote", 0),
        ),
        case(
            "source_fields_are_anded",
            SOURCE_ANDED,
            http("GET", "a", "/").principal("dev"),
            DeniedNoMatch,
        ),
        case(
            "source_example_ip_excluded",
            SOURCE_ANDED,
            http("GET", "a", "/")
                .principal("td/ns/prod/sa/x")
                .source_ip("203.0.113.4"),
            DeniedNoMatch,
        ),
        case(
            "from_entries_are_ored",
            FROM_ORED,
            http("GET", "a", "/").principal("cluster.local/ns/payments/sa/api"),
            AllowedBy("from-or", 0),
        ),
        // --- operation ---
        case(
            "host_exact",
            HOSTS,
            http("GET", "github.com", "/"),
            AllowedBy("hosts", 0),
        ),
        case(
            "host_subdomain_wildcard",
            HOSTS,
            http("GET", "raw.githubusercontent.com", "/"),
            AllowedBy("hosts", 0),
        ),
        case(
            "host_wildcard_not_apex",
            HOSTS,
            http("GET", "githubusercontent.com", "/"),
            DeniedNoMatch,
        ),
        case(
            "host_case_insensitive",
            HOSTS,
            http("GET", "api.stripe.COM", "/"),
            AllowedBy("hosts", 0),
        ),
        case(
            "host_not_a_suffix_trick",
            HOSTS,
            http("GET", "github.com.evil.example", "/"),
            DeniedNoMatch,
        ),
        case(
            "host_port_ignored_on_deny",
            DENY_EVIL,
            http("GET", "EVIL.example:443", "/"),
            DeniedBy("deny-evil", 0),
        ),
        case(
            "host_trailing_dot_ignored_on_deny",
            DENY_EVIL,
            http("GET", "evil.example.", "/"),
            DeniedBy("deny-evil", 0),
        ),
        case(
            "host_port_and_dot_ignored",
            DENY_EVIL,
            http("GET", "Evil.Example.:8443", "/"),
            DeniedBy("deny-evil", 0),
        ),
        case(
            "host_any_port_pattern",
            HOST_ANY_PORT,
            http("GET", "httpbin.com:8080", "/"),
            AllowedBy("httpbin", 0),
        ),
        case(
            "host_missing_authority",
            HOSTS,
            http("GET", "github.com", "/").no_authority(),
            DeniedNoMatch,
        ),
        case(
            "not_hosts_denies_others",
            NOT_HOSTS,
            http("GET", "exfil.example", "/"),
            DeniedBy("not-hosts", 0),
        ),
        case(
            "not_hosts_passes_listed",
            NOT_HOSTS,
            http("GET", "db.internal.example", "/"),
            AllowedNoAllowPolicies,
        ),
        case(
            "port_string",
            PORTS,
            http("GET", "a", "/").port(443),
            AllowedBy("ports", 0),
        ),
        case(
            "port_number_form",
            PORTS,
            http("GET", "a", "/").port(8443),
            AllowedBy("ports", 0),
        ),
        case(
            "port_mismatch",
            PORTS,
            http("GET", "a", "/").port(80),
            DeniedNoMatch,
        ),
        case(
            "not_ports",
            NOT_PORTS,
            http("GET", "a", "/").port(80),
            DeniedNoMatch,
        ),
        case(
            "not_ports_admits_others",
            NOT_PORTS,
            http("GET", "a", "/").port(443),
            AllowedBy("not-ports", 0),
        ),
        case(
            "method_exact",
            METHODS,
            http("HEAD", "a", "/"),
            AllowedBy("methods", 0),
        ),
        case(
            "method_prefix",
            METHODS,
            http("PATCH", "a", "/"),
            AllowedBy("methods", 0),
        ),
        case(
            "method_case_sensitive",
            METHODS,
            http("get", "a", "/"),
            DeniedNoMatch,
        ),
        case(
            "not_methods",
            NOT_METHODS,
            http("DELETE", "a", "/"),
            DeniedBy("no-delete", 0),
        ),
        case(
            "not_methods_passes_listed",
            NOT_METHODS,
            http("GET", "a", "/"),
            AllowedNoAllowPolicies,
        ),
        case(
            "path_exact",
            PATHS,
            http("GET", "a", "/exact"),
            AllowedBy("paths", 0),
        ),
        case(
            "path_exact_not_prefix",
            PATHS,
            http("GET", "a", "/exact/more"),
            DeniedNoMatch,
        ),
        case(
            "path_prefix",
            PATHS,
            http("GET", "a", "/api/v1/x"),
            AllowedBy("paths", 0),
        ),
        case(
            "path_suffix",
            PATHS,
            http("GET", "a", "/data/report.json"),
            AllowedBy("paths", 0),
        ),
        case(
            "path_query_stripped",
            PATHS,
            http("GET", "a", "/exact?token=1"),
            AllowedBy("paths", 0),
        ),
        case(
            "path_suffix_not_in_query",
            PATHS,
            http("GET", "a", "/x?f=.json"),
            DeniedNoMatch,
        ),
        case(
            "path_presence",
            PATH_PRESENCE,
            http("GET", "a", "/"),
            AllowedBy("any-path", 0),
        ),
        case(
            "operation_fields_anded",
            OPERATION_EXAMPLE,
            http("POST", "api.example.com", "/"),
            DeniedNoMatch,
        ),
        case(
            "operation_example_allows",
            OPERATION_EXAMPLE,
            http("GET", "api.example.com", "/v1"),
            AllowedBy("op", 0),
        ),
        case(
            "operation_example_not_paths",
            OPERATION_EXAMPLE,
            http("GET", "api.example.com", "/admin/users"),
            DeniedNoMatch,
        ),
        case(
            "to_entries_are_ored",
            TO_ORED,
            http("POST", "a", "/data"),
            AllowedBy("to-or", 0),
        ),
        case(
            "to_entries_keep_pairs",
            TO_ORED,
            http("POST", "a", "/info"),
            DeniedNoMatch,
        ),
        case(
            "template_one_segment",
            TEMPLATES,
            http("GET", "a", "/repos/acme/api/releases"),
            AllowedBy("tpl", 0),
        ),
        case(
            "template_one_segment_not_two",
            TEMPLATES,
            http("GET", "a", "/repos/acme/x/api/releases"),
            DeniedNoMatch,
        ),
        case(
            "template_rest",
            TEMPLATES,
            http("GET", "a", "/raw/a/b/c.txt"),
            AllowedBy("tpl", 0),
        ),
        // --- normalisation ---
        case(
            "normalised_dot_dot_encoded",
            DENY_ADMIN,
            http("GET", "a", "/public/%2e%2e/admin"),
            DeniedBy("deny-admin", 0),
        ),
        case(
            "normalised_dot_dot_upper",
            DENY_ADMIN,
            http("GET", "a", "/public/%2E%2E/admin/x"),
            DeniedBy("deny-admin", 0),
        ),
        case(
            "normalised_dot_dot_plain",
            DENY_ADMIN,
            http("GET", "a", "/a/b/../../admin"),
            DeniedBy("deny-admin", 0),
        ),
        case(
            "normalised_backslash",
            DENY_ADMIN,
            http("GET", "a", "/public\\..\\admin"),
            DeniedBy("deny-admin", 0),
        ),
        case(
            "normalised_unreserved_escape",
            DENY_ADMIN,
            http("GET", "a", "/%61dmin"),
            DeniedBy("deny-admin", 0),
        ),
        case(
            "normalised_dot_segment",
            DENY_ADMIN,
            http("GET", "a", "/./admin"),
            DeniedBy("deny-admin", 0),
        ),
        case(
            "slashes_not_merged",
            DENY_ADMIN,
            http("GET", "a", "//admin"),
            AllowedNoAllowPolicies,
        ),
        case(
            "encoded_slash_not_decoded",
            DENY_ADMIN,
            http("GET", "a", "/admin%2fx"),
            AllowedNoAllowPolicies,
        ),
        // --- when ---
        case(
            "when_header_exact",
            WHEN_HEADER,
            http("GET", "a", "/").header("x-team", "payments"),
            AllowedBy("hdr", 0),
        ),
        case(
            "when_header_prefix",
            WHEN_HEADER,
            http("GET", "a", "/").header("X-TEAM", "ci-build"),
            AllowedBy("hdr", 0),
        ),
        case(
            "when_header_missing",
            WHEN_HEADER,
            http("GET", "a", "/"),
            DeniedNoMatch,
        ),
        case(
            "when_header_repeated_is_joined",
            WHEN_HEADER,
            http("GET", "a", "/")
                .header("x-team", "payments")
                .header("x-team", "evil"),
            DeniedNoMatch,
        ),
        case(
            "when_header_not_values",
            WHEN_HEADER_NOT,
            http("GET", "a", "/").header("x-debug", "on"),
            DeniedBy("hdr-not", 0),
        ),
        case(
            "when_header_not_values_listed",
            WHEN_HEADER_NOT,
            http("GET", "a", "/").header("x-debug", "off"),
            AllowedNoAllowPolicies,
        ),
        case(
            "when_header_not_values_absent",
            WHEN_HEADER_NOT,
            http("GET", "a", "/"),
            DeniedBy("hdr-not", 0),
        ),
        case(
            "when_source_ip",
            WHEN_SOURCE_IP,
            http("GET", "a", "/"),
            AllowedBy("w-src", 0),
        ),
        case(
            "when_source_ip_mismatch",
            WHEN_SOURCE_IP,
            http("GET", "a", "/").source_ip("10.2.0.1"),
            DeniedNoMatch,
        ),
        case(
            "when_remote_ip_not_values",
            WHEN_REMOTE_IP,
            http("GET", "a", "/"),
            DeniedNoMatch,
        ),
        case(
            "when_source_namespace",
            WHEN_NAMESPACE,
            tcp("x"),
            AllowedBy("w-ns", 0),
        ),
        case(
            "when_source_principal",
            WHEN_PRINCIPAL,
            http("GET", "a", "/"),
            AllowedBy("w-principal", 0),
        ),
        case(
            "when_destination_ip",
            WHEN_DEST_IP,
            http("GET", "a", "/"),
            AllowedBy("w-dst", 0),
        ),
        case(
            "when_destination_ip_mismatch",
            WHEN_DEST_IP,
            http("GET", "a", "/").destination_ip("10.0.1.1"),
            DeniedNoMatch,
        ),
        case(
            "when_destination_port",
            WHEN_DEST_PORT,
            tcp("x").port(8443),
            AllowedBy("w-port", 0),
        ),
        case(
            "when_destination_port_mismatch",
            WHEN_DEST_PORT,
            tcp("x").port(22),
            DeniedNoMatch,
        ),
        case(
            "when_sni",
            WHEN_SNI,
            tcp("api.github.com"),
            AllowedBy("w-sni", 0),
        ),
        case(
            "when_sni_case_and_dot",
            WHEN_SNI,
            tcp("GitHub.com."),
            AllowedBy("w-sni", 0),
        ),
        case("when_sni_absent", WHEN_SNI, tcp(""), DeniedNoMatch),
        case(
            "when_conditions_anded",
            WHEN_ANDED,
            tcp("x").port(80),
            DeniedNoMatch,
        ),
        case(
            "when_conditions_all_match",
            WHEN_ANDED,
            tcp("x"),
            AllowedBy("w-and", 0),
        ),
        // --- TCP: HTTP-only fields ---
        case(
            "tcp_allow_rule_with_hosts_never_matches",
            TCP_ALLOW_HOSTS,
            tcp("github.com"),
            DeniedNoMatch,
        ),
        case(
            "tcp_allow_rule_with_hosts_still_works_for_http",
            TCP_ALLOW_HOSTS,
            http("GET", "github.com", "/"),
            AllowedBy("http-only", 0),
        ),
        case(
            "tcp_allow_rule_with_tcp_fields",
            TCP_ALLOW_PORTS,
            tcp("anything"),
            AllowedBy("port-only", 0),
        ),
        case(
            "tcp_deny_methods_ignored_port_kept",
            TCP_DENY_POST_8080,
            tcp("x").port(8080),
            DeniedBy("deny-post", 0),
        ),
        case(
            "tcp_deny_other_port_passes",
            TCP_DENY_POST_8080,
            tcp("x").port(443),
            AllowedNoAllowPolicies,
        ),
        case(
            "http_deny_needs_the_method",
            TCP_DENY_POST_8080,
            http("GET", "a", "/").port(8080),
            AllowedNoAllowPolicies,
        ),
        case(
            "tcp_deny_http_only_rule_denies_all_tcp",
            TCP_DENY_POST,
            tcp("x"),
            DeniedBy("deny-post", 0),
        ),
        case(
            "tcp_deny_header_condition_ignored",
            TCP_DENY_HEADER,
            tcp("x"),
            DeniedBy("deny-hdr", 0),
        ),
        case(
            "http_deny_header_condition_applies",
            TCP_DENY_HEADER,
            http("GET", "a", "/"),
            AllowedNoAllowPolicies,
        ),
        case(
            "tcp_audit_http_fields_ignored",
            TCP_AUDIT_PATHS,
            tcp("x"),
            AllowedNoAllowPolicies,
        )
        .audit(&["audit-paths"]),
        case(
            "tcp_allow_by_sni_and_namespace",
            TCP_ALLOW_SNI,
            tcp("github.com").principal("cluster.local/ns/ci/sa/runner"),
            AllowedBy("tls-github", 0),
        ),
        case(
            "tcp_allow_by_sni_wrong_namespace",
            TCP_ALLOW_SNI,
            tcp("github.com"),
            DeniedNoMatch,
        ),
        // --- dry run ---
        case(
            "dry_run_deny_is_not_enforced",
            DRY_DENY,
            http("GET", "evil.example", "/"),
            AllowedNoAllowPolicies,
        )
        .dry_run(&[("try-deny", Some(0), WouldBe::Deny)]),
        case(
            "dry_run_deny_not_matching_is_silent",
            DRY_DENY,
            http("GET", "good.example", "/"),
            AllowedNoAllowPolicies,
        )
        .dry_run(&[]),
        case(
            "dry_run_allow_would_deny",
            DRY_ALLOW_ONLY,
            http("GET", "evil.example", "/"),
            AllowedNoAllowPolicies,
        )
        .dry_run(&[("try-allow", None, WouldBe::Deny)]),
        case(
            "dry_run_allow_would_allow",
            DRY_ALLOW_ONLY,
            http("GET", "github.com", "/"),
            AllowedNoAllowPolicies,
        )
        .dry_run(&[("try-allow", Some(0), WouldBe::Allow)]),
        case(
            "dry_run_allow_irrelevant_beside_enforced",
            DRY_ALLOW_WITH_ENFORCED,
            http("GET", "evil.example", "/"),
            AllowedBy("allow-all", 0),
        )
        .dry_run(&[]),
        case(
            "dry_run_allow_cannot_beat_deny",
            DRY_ALLOW_UNDER_DENY,
            http("GET", "evil.example", "/"),
            DeniedBy("deny-evil", 0),
        )
        .dry_run(&[("try-allow", Some(0), WouldBe::Deny)]),
        case("dry_run_audit", DRY_AUDIT, tcp("x"), AllowedNoAllowPolicies)
            .audit(&[])
            .dry_run(&[("try-audit", Some(0), WouldBe::Audit)]),
        // --- examples from Istio's documentation ---
        case(
            "istio_doc_sleep_get_info",
            ISTIO_ALLOW_INFO_DATA,
            http("GET", "httpbin", "/info/x").principal("cluster.local/ns/default/sa/sleep"),
            AllowedBy("httpbin", 0),
        ),
        case(
            "istio_doc_test_ns_post_data",
            ISTIO_ALLOW_INFO_DATA,
            http("POST", "httpbin", "/data").principal("cluster.local/ns/test/sa/any"),
            AllowedBy("httpbin", 0),
        ),
        case(
            "istio_doc_post_info_denied",
            ISTIO_ALLOW_INFO_DATA,
            http("POST", "httpbin", "/info").principal("cluster.local/ns/test/sa/any"),
            DeniedNoMatch,
        ),
        case(
            "istio_doc_other_source_denied",
            ISTIO_ALLOW_INFO_DATA,
            http("GET", "httpbin", "/info"),
            DeniedNoMatch,
        ),
        case(
            "istio_doc_deny_dev_post",
            ISTIO_DENY_DEV_POST,
            http("POST", "a", "/"),
            DeniedBy("deny-dev-post", 0),
        ),
        case(
            "istio_doc_deny_dev_get_allowed",
            ISTIO_DENY_DEV_POST,
            http("GET", "a", "/"),
            AllowedNoAllowPolicies,
        ),
        case(
            "istio_doc_ingress_ip_allowed",
            ISTIO_INGRESS_IPS,
            http("GET", "a", "/").source_ip("5.6.7.8"),
            AllowedBy("ingress-policy", 0),
        ),
        case(
            "istio_doc_ingress_ip_denied",
            ISTIO_INGRESS_IPS,
            http("GET", "a", "/").source_ip("9.9.9.9"),
            DeniedNoMatch,
        ),
        case(
            "istio_doc_audit_profile",
            ISTIO_AUDIT_PROFILE,
            http("GET", "a", "/user/profile/me"),
            AllowedNoAllowPolicies,
        )
        .audit(&["audit-user-profile"]),
        case(
            "istio_egress_gateway_allow",
            ISTIO_EGRESS_GATEWAY,
            http("GET", "www.company.com", "/allow").principal("cluster.local/ns/a/sa/a"),
            AllowedBy("egress", 0),
        ),
        case(
            "istio_egress_gateway_wrong_path",
            ISTIO_EGRESS_GATEWAY,
            http("GET", "www.company.com", "/deny").principal("cluster.local/ns/a/sa/a"),
            DeniedNoMatch,
        ),
        case(
            "istio_egress_gateway_wrong_client",
            ISTIO_EGRESS_GATEWAY,
            http("GET", "www.company.com", "/allow").principal("cluster.local/ns/b/sa/b"),
            DeniedNoMatch,
        ),
    ]
}

#[test]
fn decision_table() {
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut names = std::collections::HashSet::new();
    let mut failures = Vec::new();
    for case in &cases {
        assert!(names.insert(case.name), "duplicate case name {}", case.name);
        let config = compile(case.policies);
        let attrs = case.req.attributes(config.policy.header_names());
        let d = config.policy.evaluate(&attrs);
        let got = match (&d.verdict, &d.reason) {
            (Verdict::Allow, Reason::AllowedByPolicy) => {
                AllowedBy(leak(d.policy), d.rule.unwrap_or(usize::MAX))
            }
            (Verdict::Allow, Reason::NoAllowPolicies) => AllowedNoAllowPolicies,
            (Verdict::Deny, Reason::DeniedByPolicy) => {
                DeniedBy(leak(d.policy), d.rule.unwrap_or(usize::MAX))
            }
            (Verdict::Deny, Reason::NoAllowPolicyMatched) => DeniedNoMatch,
            other => panic!("{}: unexpected decision {other:?}", case.name),
        };
        if got != case.want {
            failures.push(format!(
                "{}: want {:?}, got {:?}",
                case.name, case.want, got
            ));
        }
        if let Some(audit) = &case.audit {
            if &d.audit != audit {
                failures.push(format!(
                    "{}: audit want {:?}, got {:?}",
                    case.name, audit, d.audit
                ));
            }
        }
        if let Some(dry) = &case.dry_run {
            let got: Vec<_> = d
                .dry_run
                .iter()
                .map(|h| (h.policy, h.rule, h.would_be))
                .collect();
            if &got != dry {
                failures.push(format!(
                    "{}: dry run want {:?}, got {:?}",
                    case.name, dry, got
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    println!("{} decision cases passed", cases.len());
}

fn leak(policy: Option<&str>) -> &'static str {
    Box::leak(policy.unwrap_or("<none>").to_string().into_boxed_str())
}

/// Many policies: the host (HTTP) and SNI (TCP) indexes narrow the rules, and the first
/// matching policy in configuration order must still win.
#[test]
fn indexed_rules_keep_configuration_order() {
    let mut policies = Vec::new();
    for i in 0..40 {
        match i {
            // Unindexed rule (no host requirement) in the middle: wins for namespace `ops`.
            10 => policies.push(r#"{"name":"p10","rules":[{"from":[{"source":{"namespaces":["ops"]}}]}]}"#.to_string()),
            // A wildcard and an exact name that overlap with later policies.
            20 => policies.push(r#"{"name":"p20","rules":[{"to":[{"operation":{"hosts":["*.shared.example"]}}]}]}"#.to_string()),
            30 => policies.push(r#"{"name":"p30","rules":[{"to":[{"operation":{"hosts":["api.shared.example"]}}]}]}"#.to_string()),
            _ => policies.push(format!(
                r#"{{"name":"p{i}","rules":[{{"to":[{{"operation":{{"hosts":["h{i}.example"]}}}}]}},{{"when":[{{"key":"connection.sni","values":["h{i}.example"]}}]}}]}}"#
            )),
        }
    }
    let config = compile(Box::leak(
        format!("[{}]", policies.join(",")).into_boxed_str(),
    ));
    let check = |req: Req, policy: &str, rule: Option<usize>| {
        let attrs = req.attributes(config.policy.header_names());
        let d = config.policy.evaluate(&attrs);
        assert_eq!((d.policy, d.rule), (Some(policy), rule), "{req:?}");
    };
    check(http("GET", "h5.example", "/"), "p5", Some(0));
    check(http("GET", "H39.example:443", "/"), "p39", Some(0));
    check(
        http("GET", "h35.example", "/").principal("td/ns/ops/sa/x"),
        "p10",
        Some(0),
    );
    check(
        http("GET", "h3.example", "/").principal("td/ns/ops/sa/x"),
        "p3",
        Some(0),
    );
    check(http("GET", "api.shared.example", "/"), "p20", Some(0));
    check(http("GET", "other.shared.example", "/"), "p20", Some(0));
    check(tcp("h7.example"), "p7", Some(1));
    check(
        tcp("h12.example").principal("td/ns/ops/sa/x"),
        "p10",
        Some(0),
    );
    let attrs = http("GET", "nowhere.example", "/").attributes(&[]);
    assert_eq!(
        config.policy.evaluate(&attrs).reason,
        Reason::NoAllowPolicyMatched
    );
    let attrs = tcp("api.shared.example").attributes(&[]);
    assert_eq!(
        config.policy.evaluate(&attrs).reason,
        Reason::NoAllowPolicyMatched
    );
}
