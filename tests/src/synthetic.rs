//! A realistic egress gateway access log, generated from a seed: the same seed and length give
//! the same bytes. `examples/access-log.json` is written by it (`egress-sim generate-access-log`),
//! and large files for benchmarks too; it streams, so any length fits in memory.
//!
//! The cluster it describes is the one of `examples/`: CI runners cloning from GitHub and
//! installing packages, a payments API calling Stripe (with bursts), a shop frontend using the
//! package mirror, a CDN and some things it should not (a paste site, transfer.sh), a data team
//! shipping to S3 buckets and Datadog, and a legacy pod without sidecar identity. HTTP reaches
//! the gateway inside the sidecars' mutual TLS (port 80, principal in `downstream_peer_uri_san`,
//! as with `%DOWNSTREAM_PEER_URI_SAN%` added to the log format); TLS passthrough on port 443.
//! Lines are written when streams end, as Envoy does, so start times are not in order, and a few
//! lines are Envoy's own log messages or cut off, as in a real pod log.

use std::collections::BinaryHeap;
use std::io::Write;

use serde_json::{json, Map, Value};

use crate::accesslog::time::format_utc;

/// What `examples/access-log.json` is made with.
pub const EXAMPLE_SEED: u64 = 20_260_302;
pub const EXAMPLE_LINES: usize = 2_400;
/// 2026-03-02T09:00:00Z.
const START_MS: i64 = 1_772_442_000_000;
const GATEWAY: &str = "10.20.0.5";
const MESH_SNI: &str = "outbound_.80_._.istio-egressgateway.istio-system.svc.cluster.local";

/// SplitMix64: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }
}

/// A workload: its identity (None: no sidecar identity), its pods and what it does.
struct Workload {
    principal: Option<&'static str>,
    pods: &'static [&'static str],
    user_agent: &'static str,
    /// Relative weight of its requests.
    weight: u64,
    calls: &'static [Call],
}

/// One kind of request a workload makes.
struct Call {
    weight: u64,
    host: &'static str,
    upstream: &'static str,
    /// None: TLS passthrough.
    http: Option<(&'static [&'static str], &'static [&'static str])>,
}

const fn http(
    weight: u64,
    host: &'static str,
    upstream: &'static str,
    methods: &'static [&'static str],
    paths: &'static [&'static str],
) -> Call {
    Call {
        weight,
        host,
        upstream,
        http: Some((methods, paths)),
    }
}

const fn tls(weight: u64, host: &'static str, upstream: &'static str) -> Call {
    Call {
        weight,
        host,
        upstream,
        http: None,
    }
}

const WORKLOADS: &[Workload] = &[
    Workload {
        principal: Some("cluster.local/ns/ci/sa/github-runner"),
        pods: &["10.1.4.20", "10.1.4.21", "10.1.4.22"],
        user_agent: "git/2.43.0",
        weight: 30,
        calls: &[
            http(
                30,
                "github.com",
                "140.82.121.4",
                &["GET"],
                &[
                    "/acme-corp/api.git/info/refs?service=git-upload-pack",
                    "/acme-corp/web.git/info/refs?service=git-upload-pack",
                    "/acme-corp/infra.git/info/refs?service=git-upload-pack",
                ],
            ),
            http(
                12,
                "github.com",
                "140.82.121.4",
                &["POST"],
                &[
                    "/acme-corp/api.git/git-upload-pack",
                    "/acme-corp/web.git/git-upload-pack",
                ],
            ),
            http(
                3,
                "github.com",
                "140.82.121.4",
                &["GET"],
                &["/torvalds/linux.git/info/refs?service=git-upload-pack"],
            ),
            http(
                14,
                "api.github.com",
                "140.82.121.6",
                &["GET"],
                &[
                    "/repos/acme-corp/api/releases/latest",
                    "/repos/acme-corp/web/pulls?state=open",
                    "/repos/acme-corp/api/actions/runs",
                ],
            ),
            http(
                4,
                "api.github.com",
                "140.82.121.6",
                &["POST"],
                &["/repos/acme-corp/api/statuses/3f2a9c1"],
            ),
            http(
                6,
                "codeload.github.com",
                "140.82.121.10",
                &["GET"],
                &["/acme-corp/tools/tar.gz/refs/heads/main"],
            ),
            http(
                6,
                "raw.githubusercontent.com",
                "185.199.108.133",
                &["GET"],
                &["/acme-corp/tools/main/install.sh"],
            ),
            http(
                4,
                "objects.githubusercontent.com",
                "185.199.110.133",
                &["GET"],
                &["/github-production-release-asset/9876543"],
            ),
            tls(8, "github.com", "140.82.121.4"),
            tls(5, "api.github.com", "140.82.121.6"),
            http(
                8,
                "packages.acme.example",
                "10.60.1.10",
                &["GET"],
                &[
                    "/simple/requests/",
                    "/simple/urllib3/",
                    "/npm/left-pad/-/left-pad-1.3.0.tgz",
                ],
            ),
        ],
    },
    Workload {
        principal: Some("cluster.local/ns/payments/sa/payments-api"),
        pods: &["10.1.7.3", "10.1.7.4"],
        user_agent: "stripe-python/7.1.0",
        weight: 18,
        calls: &[
            http(
                20,
                "api.stripe.com",
                "54.187.174.169",
                &["GET"],
                &[
                    "/v1/charges/ch_3OqK2L2eZvKYlo2C",
                    "/v1/customers/cus_PJx8Yd2",
                    "/v1/balance",
                ],
            ),
            http(
                10,
                "api.stripe.com",
                "54.187.174.169",
                &["POST"],
                &["/v1/payment_intents", "/v1/refunds"],
            ),
            http(
                1,
                "api.stripe.com",
                "54.187.174.169",
                &["DELETE"],
                &["/v1/customers/cus_PJx8Yd2"],
            ),
            tls(6, "api.stripe.com", "54.187.174.169"),
            http(
                3,
                "packages.acme.example",
                "10.60.1.10",
                &["GET"],
                &["/simple/stripe/"],
            ),
        ],
    },
    Workload {
        principal: Some("cluster.local/ns/shop/sa/frontend"),
        pods: &["10.1.9.11", "10.1.9.12", "10.1.9.13"],
        user_agent: "Go-http-client/1.1",
        weight: 34,
        calls: &[
            http(
                20,
                "packages.acme.example",
                "10.60.1.10",
                &["GET", "HEAD"],
                &[
                    "/assets/app.js",
                    "/assets/app.css",
                    "/debian/dists/bookworm/InRelease",
                ],
            ),
            http(
                1,
                "packages.acme.example",
                "10.60.1.10",
                &["GET"],
                &["/admin/settings"],
            ),
            http(
                8,
                "img1.shop-cdn.example",
                "203.0.113.21",
                &["GET"],
                &["/p/1001.webp", "/p/1002.webp"],
            ),
            http(
                8,
                "img2.shop-cdn.example",
                "203.0.113.22",
                &["GET"],
                &["/p/2001.webp"],
            ),
            http(
                8,
                "img3.shop-cdn.example",
                "203.0.113.23",
                &["GET"],
                &["/p/3001.webp"],
            ),
            http(
                6,
                "api.sendgrid.com",
                "167.89.118.35",
                &["POST"],
                &["/v3/mail/send"],
            ),
            http(
                5,
                "maps.googleapis.com",
                "142.250.185.74",
                &["GET"],
                &["/maps/api/geocode/json?address=Berlin"],
            ),
            http(
                1,
                "pastebin.com",
                "104.20.67.143",
                &["POST"],
                &["/api/api_post.php"],
            ),
            tls(6, "packages.acme.example", "10.60.1.10"),
            tls(1, "transfer.sh", "144.76.136.153"),
        ],
    },
    Workload {
        principal: Some("cluster.local/ns/data/sa/exporter"),
        pods: &["10.1.11.7"],
        user_agent: "aws-sdk-go-v2/1.25.2",
        weight: 12,
        calls: &[
            http(
                6,
                "acme-events.s3.eu-west-1.amazonaws.com",
                "52.218.48.10",
                &["PUT"],
                &["/2026/03/02/events-0001.parquet"],
            ),
            http(
                5,
                "acme-metrics.s3.eu-west-1.amazonaws.com",
                "52.218.48.11",
                &["PUT"],
                &["/2026/03/02/metrics-0001.parquet"],
            ),
            http(
                4,
                "acme-backups.s3.eu-west-1.amazonaws.com",
                "52.218.48.12",
                &["PUT", "GET"],
                &["/db/pg-base-0001.tar"],
            ),
            http(
                5,
                "http-intake.logs.datadoghq.eu",
                "34.107.236.155",
                &["POST"],
                &["/api/v2/logs"],
            ),
            http(
                4,
                "api.datadoghq.eu",
                "34.107.236.150",
                &["POST"],
                &["/api/v2/series"],
            ),
            http(
                3,
                "trace.agent.datadoghq.eu",
                "34.107.236.151",
                &["POST"],
                &["/api/v0.2/traces"],
            ),
        ],
    },
    Workload {
        principal: None,
        pods: &["10.1.12.40"],
        user_agent: "curl/7.88.1",
        weight: 6,
        calls: &[
            http(
                6,
                "packages.acme.example",
                "10.60.1.10",
                &["GET"],
                &["/debian/dists/bookworm/InRelease"],
            ),
            tls(3, "packages.acme.example", "10.60.1.10"),
            tls(1, "github.com", "140.82.121.4"),
        ],
    },
];

/// Envoy's own messages that share the pod log.
const ENVOY_MESSAGES: &[&str] = &[
    "warning\tenvoy config external/envoy/source/extensions/config_subscription/grpc/grpc_stream.h:155\tStreamAggregatedResources gRPC config stream to xds-grpc closed since 1802s ago: 13, ",
    "info\tenvoy upstream external/envoy/source/common/upstream/cds_api_helper.cc:32\tcds: add 14 cluster(s), remove 0 cluster(s)",
    "warning\tenvoy main external/envoy/source/server/server.cc:936\tThere is no configured limit to the number of allowed active downstream connections.",
];

fn weighted<'a, T>(rng: &mut Rng, items: &'a [T], weight: impl Fn(&T) -> u64) -> &'a T {
    let total: u64 = items.iter().map(&weight).sum();
    let mut roll = rng.below(total);
    for item in items {
        let w = weight(item);
        if roll < w {
            return item;
        }
        roll -= w;
    }
    &items[0]
}

/// A line waiting for its stream to end.
struct Pending {
    end_ms: i64,
    order: u64,
    line: String,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.end_ms, self.order) == (other.end_ms, other.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    // A min-heap on (end, order).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.end_ms, other.order).cmp(&(self.end_ms, self.order))
    }
}

fn timestamp(ms: i64) -> String {
    format!(
        "{}.{:03}Z",
        format_utc(ms).replace(' ', "T"),
        ms.rem_euclid(1000)
    )
}

fn request_line(rng: &mut Rng, workload: &Workload, call: &Call, start_ms: i64) -> (i64, String) {
    let pod = rng.pick(workload.pods);
    let port = 32_768 + rng.below(28_000);
    let mut line = Map::new();
    let null = Value::Null;
    let (duration, bytes_received, bytes_sent) = match call.http {
        Some(_) => (
            4 + rng.below(180),
            200 + rng.below(2_000),
            300 + rng.below(40_000),
        ),
        None => (
            200 + rng.below(30_000),
            517 + rng.below(4_000),
            4_000 + rng.below(400_000),
        ),
    };
    let (listener, sni) = match call.http {
        Some(_) => (80, MESH_SNI),
        None => (443, call.host),
    };
    let peer = match (workload.principal, call.http) {
        (Some(p), _) => json!(format!("spiffe://{p}")),
        (None, _) => null.clone(),
    };
    line.insert("bytes_received".into(), json!(bytes_received));
    line.insert("bytes_sent".into(), json!(bytes_sent));
    line.insert("connection_termination_details".into(), null.clone());
    line.insert(
        "downstream_local_address".into(),
        json!(format!("{GATEWAY}:{listener}")),
    );
    line.insert("downstream_peer_uri_san".into(), peer);
    line.insert(
        "downstream_remote_address".into(),
        json!(format!("{pod}:{port}")),
    );
    line.insert("duration".into(), json!(duration));
    line.insert("requested_server_name".into(), json!(sni));
    line.insert("route_name".into(), null.clone());
    line.insert("start_time".into(), json!(timestamp(start_ms)));
    line.insert(
        "upstream_cluster".into(),
        json!(format!("outbound|443||{}", call.host)),
    );
    line.insert(
        "upstream_host".into(),
        json!(format!("{}:443", call.upstream)),
    );
    line.insert(
        "upstream_local_address".into(),
        json!(format!("{GATEWAY}:{}", 32_768 + rng.below(28_000))),
    );
    line.insert("upstream_transport_failure_reason".into(), null.clone());
    line.insert("x_forwarded_for".into(), null.clone());
    match call.http {
        Some((methods, paths)) => {
            let method = *rng.pick(methods);
            let code = match method {
                "POST" => 201,
                "PUT" => 200,
                "HEAD" => 304,
                _ => *rng.pick(&[200, 200, 200, 304, 404]),
            };
            line.insert("authority".into(), json!(call.host));
            line.insert("method".into(), json!(method));
            line.insert("path".into(), json!(rng.pick(paths)));
            line.insert(
                "protocol".into(),
                json!(if rng.below(4) == 0 {
                    "HTTP/2"
                } else {
                    "HTTP/1.1"
                }),
            );
            line.insert("request_id".into(), json!(rng.uuid()));
            line.insert("response_code".into(), json!(code));
            line.insert("response_code_details".into(), json!("via_upstream"));
            line.insert("response_flags".into(), json!("-"));
            line.insert(
                "upstream_service_time".into(),
                json!((duration - 2).to_string()),
            );
            line.insert("user_agent".into(), json!(workload.user_agent));
        }
        None => {
            for key in [
                "authority",
                "method",
                "path",
                "protocol",
                "request_id",
                "response_code_details",
                "upstream_service_time",
                "user_agent",
            ] {
                line.insert(key.into(), null.clone());
            }
            line.insert("response_code".into(), json!(0));
            line.insert("response_flags".into(), json!("-"));
        }
    }
    (start_ms + duration as i64, Value::Object(line).to_string())
}

/// Writes `lines` lines of access log (plus nothing else) for `seed`.
pub fn generate(seed: u64, lines: usize, out: &mut impl Write) -> std::io::Result<()> {
    let mut rng = Rng(seed);
    let mut pending: BinaryHeap<Pending> = BinaryHeap::new();
    let mut now = START_MS;
    let mut written = 0usize;
    let mut order = 0u64;
    let mut burst_left = 0u32;
    let emit = |line: &str, out: &mut dyn Write, written: &mut usize| -> std::io::Result<()> {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        *written += 1;
        Ok(())
    };
    while written < lines {
        // About 1.3 lines a second, with bursts from the payments API.
        now += if burst_left > 0 {
            40 + rng.below(120) as i64
        } else {
            200 + rng.below(1_300) as i64
        };
        while let Some(top) = pending.peek() {
            if top.end_ms > now || written >= lines {
                break;
            }
            if let Some(p) = pending.pop() {
                emit(&p.line, out, &mut written)?;
            }
        }
        if written >= lines {
            break;
        }
        let roll = rng.below(1_000);
        if roll < 4 {
            // Envoy's own messages, and a line cut off by log rotation.
            let message = format!(
                "{}\t{}",
                timestamp(now).replace('Z', "123Z"),
                rng.pick(ENVOY_MESSAGES)
            );
            emit(&message, out, &mut written)?;
            continue;
        }
        if roll < 6 {
            let (_, line) = request_line(&mut rng, &WORKLOADS[0], &WORKLOADS[0].calls[0], now);
            let cut = line.len() / 2;
            emit(&line[..cut], out, &mut written)?;
            continue;
        }
        if burst_left == 0 && roll < 12 {
            burst_left = 5 + rng.below(4) as u32;
        }
        let (workload, call) = if burst_left > 0 {
            burst_left -= 1;
            (&WORKLOADS[1], &WORKLOADS[1].calls[1])
        } else {
            let w = weighted(&mut rng, WORKLOADS, |w| w.weight);
            (w, weighted(&mut rng, w.calls, |c| c.weight))
        };
        let (end_ms, line) = request_line(&mut rng, workload, call, now);
        order += 1;
        pending.push(Pending {
            end_ms,
            order,
            line,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        generate(7, 300, &mut a).unwrap();
        generate(7, 300, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.iter().filter(|&&c| c == b'\n').count(), 300);
        let mut c = Vec::new();
        generate(8, 300, &mut c).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn timestamps_look_like_envoys() {
        assert_eq!(timestamp(START_MS + 1_234), "2026-03-02T09:00:01.234Z");
    }
}
