//! A Kubernetes API server double over real HTTP, plus an Alertmanager and webhook receiver.
//!
//! It serves objects the way the API server does (list with `limit`/`continue`, typed lists whose
//! items carry no `kind`, `Status` bodies on errors, `watch=true` as a chunked stream of JSON lines)
//! and can be told to misbehave: expire a continue token (410), throttle (429), fail (500), answer
//! slowly, forbid a namespace (403), end a watch with 410 Gone. Every request is recorded so tests
//! can assert what the client sent. Tests reach it through a generated kubeconfig file.
//!
//! Collections with a status subresource behave as the API server's do: `metadata.generation`
//! starts at 1 and grows when the spec changes; writes to the object keep its status, writes to
//! `/status` change only the status. Server-side apply (`PATCH` with
//! `application/apply-patch+yaml`) creates the object or merges the applied fields. A write that
//! carries `metadata.resourceVersion` is refused with 409 Conflict when the object has moved on.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// One REST collection the mock knows.
#[derive(Debug, Clone, Copy)]
pub struct Collection {
    pub group_version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// A `/status` subresource, and `metadata.generation` tracking the spec.
    pub status: bool,
}

pub const COLLECTIONS: &[Collection] = &[
    Collection {
        group_version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        status: false,
    },
    Collection {
        group_version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        status: false,
    },
    Collection {
        group_version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        status: false,
    },
    Collection {
        group_version: "networking.k8s.io/v1",
        plural: "networkpolicies",
        kind: "NetworkPolicy",
        namespaced: true,
        status: false,
    },
    Collection {
        group_version: "extensions.istio.io/v1alpha1",
        plural: "wasmplugins",
        kind: "WasmPlugin",
        namespaced: true,
        status: false,
    },
    Collection {
        group_version: "networking.istio.io/v1alpha3",
        plural: "envoyfilters",
        kind: "EnvoyFilter",
        namespaced: true,
        status: false,
    },
    Collection {
        group_version: "networking.istio.io/v1",
        plural: "serviceentries",
        kind: "ServiceEntry",
        namespaced: true,
        status: false,
    },
    Collection {
        group_version: "gateway.networking.k8s.io/v1",
        plural: "gateways",
        kind: "Gateway",
        namespaced: true,
        status: false,
    },
    Collection {
        group_version: "events.k8s.io/v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        status: false,
    },
    Collection {
        group_version: "wgpolicyk8s.io/v1alpha2",
        plural: "policyreports",
        kind: "PolicyReport",
        namespaced: true,
        status: false,
    },
    Collection {
        group_version: "wgpolicyk8s.io/v1alpha2",
        plural: "clusterpolicyreports",
        kind: "ClusterPolicyReport",
        namespaced: false,
        status: false,
    },
    Collection {
        group_version: "policy.egress-guard.dev/v1alpha1",
        plural: "clusteregresspolicies",
        kind: "ClusterEgressPolicy",
        namespaced: false,
        status: true,
    },
    Collection {
        group_version: "policy.egress-guard.dev/v1alpha1",
        plural: "egresspolicies",
        kind: "EgressPolicy",
        namespaced: true,
        status: true,
    },
    Collection {
        group_version: "coordination.k8s.io/v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        status: false,
    },
];

fn collection_by_kind(api_version: &str, kind: &str) -> Option<&'static Collection> {
    COLLECTIONS
        .iter()
        .find(|c| c.group_version == api_version && c.kind == kind)
}

fn collection_by_plural(group_version: &str, plural: &str) -> Option<&'static Collection> {
    COLLECTIONS
        .iter()
        .find(|c| c.group_version == group_version && c.plural == plural)
}

/// Built-in types come back from a list without `kind`/`apiVersion` on each item; custom
/// resources keep them.
fn is_builtin(group_version: &str) -> bool {
    // The Gateway API is a set of CRDs, although its group ends in .k8s.io.
    group_version == "v1"
        || (group_version.contains(".k8s.io/")
            && !group_version.starts_with("gateway.networking.k8s.io/"))
}

/// What a fault does to the request it matches.
#[derive(Debug, Clone)]
pub enum FaultAction {
    /// Answer with this HTTP status and a `Status` body.
    Status(u16),
    /// 410 Gone with reason `Expired`, as for a continue token that is too old.
    ExpiredContinue,
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// A watch that starts, then ends at once with an ERROR event 410 Gone ("too old resource
    /// version"), as when the API server's watch cache has moved past the client's version: the
    /// client must list again.
    WatchGone,
}

/// A misbehaviour applied to the next `times` requests that match.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: Option<Method>,
    /// Substring the request path must contain.
    pub path_contains: String,
    /// Substring the raw query must contain (e.g. `continue=`).
    pub query_contains: Option<String>,
    pub times: usize,
    pub action: FaultAction,
}

impl Fault {
    pub fn new(path_contains: &str, times: usize, action: FaultAction) -> Fault {
        Fault {
            method: None,
            path_contains: path_contains.to_string(),
            query_contains: None,
            times,
            action,
        }
    }

    pub fn method(mut self, method: Method) -> Fault {
        self.method = Some(method);
        self
    }

    pub fn query(mut self, query_contains: &str) -> Fault {
        self.query_contains = Some(query_contains.to_string());
        self
    }
}

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
    /// The HTTP status the mock answered with (0 for a watch stream that was opened).
    pub status: u16,
}

impl Recorded {
    pub fn query_param(&self, key: &str) -> Option<String> {
        parse_query(&self.query).remove(key)
    }
}

/// The event type [`MockApi::expire_watches`] sends to the open watches (never to clients).
const EXPIRED: &str = "EXPIRED";

#[derive(Debug, Clone)]
struct WatchEvent {
    rv: u64,
    collection: &'static str,
    namespace: Option<String>,
    event_type: &'static str,
    object: Value,
}

#[derive(Default)]
struct ApiState {
    resource_version: u64,
    /// plural -> (namespace or "", name) -> object
    objects: BTreeMap<&'static str, BTreeMap<(String, String), Value>>,
    log: Vec<WatchEvent>,
    faults: Vec<Fault>,
    requests: Vec<Recorded>,
    forbidden_namespaces: BTreeSet<String>,
    /// (namespace, plural) pairs forbidden while the rest of the namespace is allowed.
    forbidden_resources: BTreeSet<(String, String)>,
    /// Namespaced plurals whose cluster-wide list/watch is forbidden (only per-namespace
    /// RoleBindings exist).
    forbidden_cluster_lists: BTreeSet<String>,
    /// Collections answered with 404, as when a CRD is not installed.
    missing_collections: BTreeSet<String>,
    uid_counter: u64,
    /// What each field manager last applied (server-side apply), by (plural, namespace, name,
    /// manager): a field it applied before and omits now is removed.
    applied: BTreeMap<(String, String, String, String), Value>,
}

struct Shared {
    state: Mutex<ApiState>,
    events: broadcast::Sender<WatchEvent>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ApiState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The API server double. Dropping it stops the server.
pub struct MockApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for MockApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl MockApi {
    pub async fn start() -> MockApi {
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            state: Mutex::new(ApiState {
                resource_version: 100,
                ..ApiState::default()
            }),
            events,
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock API server");
        let addr = listener.local_addr().expect("mock address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockApi {
            addr,
            shared,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig whose only context points at this server and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("kubeconfig dir");
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: {}\ncontexts:\n- name: mock\n  context:\n    cluster: mock\n    user: auditor\n    namespace: default\ncurrent-context: mock\nusers:\n- name: auditor\n  user:\n    token: mock-token\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// Creates or replaces an object (by apiVersion/kind/namespace/name), as a controller would,
    /// and tells watchers (ADDED or MODIFIED).
    pub fn apply(&self, object: Value) {
        let mut st = self.shared.lock();
        let (coll, ns, name) = identify(&object).expect("object the mock knows");
        let existed = st
            .objects
            .get(coll.plural)
            .is_some_and(|m| m.contains_key(&(ns.clone(), name.clone())));
        let stored = store(&mut st, coll, ns, name, object);
        let event = if existed { "MODIFIED" } else { "ADDED" };
        self.publish(&mut st, coll, event, stored);
    }

    pub fn apply_all(&self, objects: impl IntoIterator<Item = Value>) {
        for o in objects {
            self.apply(o);
        }
    }

    pub fn delete(&self, plural: &str, namespace: Option<&str>, name: &str) -> bool {
        let mut st = self.shared.lock();
        let Some(coll) = COLLECTIONS.iter().find(|c| c.plural == plural) else {
            return false;
        };
        let key = (namespace.unwrap_or("").to_string(), name.to_string());
        let removed = st.objects.get_mut(coll.plural).and_then(|m| m.remove(&key));
        match removed {
            Some(mut obj) => {
                st.resource_version += 1;
                let rv = st.resource_version;
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                self.publish(&mut st, coll, "DELETED", obj);
                true
            }
            None => false,
        }
    }

    fn publish(
        &self,
        st: &mut ApiState,
        coll: &'static Collection,
        event_type: &'static str,
        object: Value,
    ) {
        let ev = WatchEvent {
            rv: st.resource_version,
            collection: coll.plural,
            namespace: object["metadata"]["namespace"].as_str().map(str::to_string),
            event_type,
            object,
        };
        st.log.push(ev.clone());
        let _ = self.shared.events.send(ev);
    }

    /// Objects of a collection, sorted by namespace and name.
    pub fn objects(&self, plural: &str) -> Vec<Value> {
        let st = self.shared.lock();
        st.objects
            .iter()
            .find(|(p, _)| **p == plural)
            .map(|(_, m)| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn object(&self, plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let st = self.shared.lock();
        st.objects
            .iter()
            .find(|(p, _)| **p == plural)
            .and_then(|(_, m)| m.get(&(namespace.unwrap_or("").to_string(), name.to_string())))
            .cloned()
    }

    /// Ends every open watch of this plural with an ERROR event 410 Gone, as the API server does
    /// when its watch cache has moved past the client's version: the clients must list again.
    pub fn expire_watches(&self, plural: &str) {
        let Some(coll) = COLLECTIONS.iter().find(|c| c.plural == plural) else {
            return;
        };
        let st = self.shared.lock();
        let _ = self.shared.events.send(WatchEvent {
            rv: st.resource_version,
            collection: coll.plural,
            namespace: None,
            event_type: EXPIRED,
            object: Value::Null,
        });
    }

    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    pub fn forbid_namespace(&self, ns: &str) {
        self.shared
            .lock()
            .forbidden_namespaces
            .insert(ns.to_string());
    }

    /// Forbids one resource in one namespace (a Role that does not cover it).
    pub fn forbid_in_namespace(&self, ns: &str, plural: &str) {
        self.shared
            .lock()
            .forbidden_resources
            .insert((ns.to_string(), plural.to_string()));
    }

    /// Forbids listing/watching this namespaced plural across all namespaces.
    pub fn forbid_cluster_list(&self, plural: &str) {
        self.shared
            .lock()
            .forbidden_cluster_lists
            .insert(plural.to_string());
    }

    /// Answers 404 for this plural, as an API server without the CRD does.
    pub fn remove_collection(&self, plural: &str) {
        self.shared
            .lock()
            .missing_collections
            .insert(plural.to_string());
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Requests with this method whose path contains `path_contains`.
    pub fn requests_matching(&self, method: &Method, path_contains: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == *method && r.path.contains(path_contains))
            .collect()
    }
}

fn identify(object: &Value) -> Option<(&'static Collection, String, String)> {
    let api_version = object["apiVersion"].as_str()?;
    let kind = object["kind"].as_str()?;
    let coll = collection_by_kind(api_version, kind)?;
    let ns = if coll.namespaced {
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string()
    } else {
        String::new()
    };
    let name = object["metadata"]["name"].as_str()?.to_string();
    Some((coll, ns, name))
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The object: with a status subresource, its status is kept as it was.
    Object,
    /// The `/status` subresource: only the status changes.
    Status,
}

/// Stores an object with fresh server-side metadata; returns the stored copy.
fn store(
    st: &mut ApiState,
    coll: &'static Collection,
    ns: String,
    name: String,
    object: Value,
) -> Value {
    store_part(st, coll, ns, name, object, Part::Object)
}

fn store_part(
    st: &mut ApiState,
    coll: &'static Collection,
    ns: String,
    name: String,
    mut object: Value,
    part: Part,
) -> Value {
    st.resource_version += 1;
    let rv = st.resource_version;
    let previous = st
        .objects
        .get(coll.plural)
        .and_then(|m| m.get(&(ns.clone(), name.clone())))
        .cloned();
    if coll.status {
        let previous_generation = previous
            .as_ref()
            .and_then(|p| p["metadata"]["generation"].as_i64());
        let generation = match (&previous, part) {
            (None, _) => 1,
            (Some(p), Part::Object) if p["spec"] != object["spec"] => {
                previous_generation.unwrap_or(0) + 1
            }
            _ => previous_generation.unwrap_or(1),
        };
        match (part, &previous) {
            (Part::Object, Some(p)) => match p.get("status") {
                Some(status) => object["status"] = status.clone(),
                None => {
                    if let Some(m) = object.as_object_mut() {
                        m.remove("status");
                    }
                }
            },
            (Part::Object, None) => {
                if let Some(m) = object.as_object_mut() {
                    m.remove("status");
                }
            }
            (Part::Status, Some(p)) => {
                let status = object.get("status").cloned();
                object = p.clone();
                match status {
                    Some(status) => object["status"] = status,
                    None => {
                        if let Some(m) = object.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            (Part::Status, None) => {}
        }
        object["metadata"]["generation"] = json!(generation);
    }
    let previous_uid = previous
        .as_ref()
        .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_string));
    let uid = previous_uid.unwrap_or_else(|| {
        st.uid_counter += 1;
        format!("00000000-0000-4000-8000-{:012}", st.uid_counter)
    });
    object["apiVersion"] = json!(coll.group_version);
    object["kind"] = json!(coll.kind);
    let meta = &mut object["metadata"];
    if !meta.is_object() {
        *meta = json!({});
    }
    meta["resourceVersion"] = json!(rv.to_string());
    meta["uid"] = json!(uid);
    if meta.get("creationTimestamp").is_none_or(Value::is_null) {
        meta["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    }
    if coll.namespaced {
        meta["namespace"] = json!(ns);
    }
    st.objects
        .entry(coll.plural)
        .or_default()
        .insert((ns, name), object.clone());
    object
}

/// A parsed API path.
struct Route {
    coll: &'static Collection,
    namespace: Option<String>,
    name: Option<String>,
    /// `/status`.
    status: bool,
}

fn parse_route(path: &str, missing: &BTreeSet<String>) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest): (String, &[&str]) = match segs.as_slice() {
        ["api", v, rest @ ..] => ((*v).to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, plural, name, status) = match rest {
        ["namespaces", ns, plural] => (Some((*ns).to_string()), *plural, None, false),
        ["namespaces", ns, plural, name] => (
            Some((*ns).to_string()),
            *plural,
            Some((*name).to_string()),
            false,
        ),
        ["namespaces", ns, plural, name, "status"] => (
            Some((*ns).to_string()),
            *plural,
            Some((*name).to_string()),
            true,
        ),
        [plural] => (None, *plural, None, false),
        [plural, name] => (None, *plural, Some((*name).to_string()), false),
        [plural, name, "status"] => (None, *plural, Some((*name).to_string()), true),
        _ => return None,
    };
    if missing.contains(plural) {
        return None;
    }
    let coll = collection_by_plural(&gv, plural)?;
    if coll.namespaced != namespace.is_some() && name.is_some() {
        return None;
    }
    if status && !coll.status {
        return None;
    }
    Some(Route {
        coll,
        namespace,
        name,
        status,
    })
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn json_response(code: u16, body: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

fn status_response(code: u16, reason: &str, message: &str) -> Response {
    json_response(code, &status_body(code, reason, message))
}

/// Label selector terms of the equality form (`k=v`, `k==v`, `k!=v`, `k`, `!k`).
fn selector_matches(selector: &str, labels: &Value) -> bool {
    selector
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .all(|term| {
            let term = term.trim();
            if let Some((k, v)) = term.split_once("!=") {
                labels[k.trim()].as_str() != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                labels[k.trim()].as_str() == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                labels.get(k.trim()).is_none()
            } else {
                labels.get(term).is_some()
            }
        })
}

fn field_selector_matches(selector: &str, object: &Value) -> bool {
    selector
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .all(|term| {
            let (path, want, negate) = match term.split_once("!=") {
                Some((p, v)) => (p, v, true),
                None => match term.split_once("==").or_else(|| term.split_once('=')) {
                    Some((p, v)) => (p, v, false),
                    None => return false,
                },
            };
            let mut cur = object;
            for seg in path.trim().split('.') {
                cur = &cur[seg];
            }
            let got = match cur {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (got == want.trim()) != negate
        })
}

fn filter_matches(query: &BTreeMap<String, String>, object: &Value) -> bool {
    let labels = &object["metadata"]["labels"];
    query
        .get("labelSelector")
        .is_none_or(|s| selector_matches(s, labels))
        && query
            .get("fieldSelector")
            .is_none_or(|s| field_selector_matches(s, object))
}

fn list_item(coll: &Collection, object: &Value) -> Value {
    let mut item = object.clone();
    if is_builtin(coll.group_version) {
        if let Some(m) = item.as_object_mut() {
            m.remove("kind");
            m.remove("apiVersion");
        }
    }
    item
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let body: Option<Value> = if bytes.is_empty() {
        None
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    let query = parse_query(&raw_query);

    // Faults first: the matching one is consumed.
    let fault = {
        let mut st = shared.lock();
        let idx = st.faults.iter().position(|f| {
            f.times > 0
                && f.method.as_ref().is_none_or(|m| *m == method)
                && path.contains(&f.path_contains)
                && f.query_contains
                    .as_ref()
                    .is_none_or(|q| raw_query.contains(q.as_str()))
        });
        idx.map(|i| {
            st.faults[i].times -= 1;
            st.faults[i].action.clone()
        })
    };
    let record = |status: u16| {
        shared.lock().requests.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            query: raw_query.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
            status,
        });
    };
    match fault {
        Some(FaultAction::Status(code)) => {
            record(code);
            let reason = match code {
                409 => "Conflict",
                410 => "Expired",
                429 => "TooManyRequests",
                500 => "InternalError",
                503 => "ServiceUnavailable",
                _ => "Unknown",
            };
            let mut resp = status_response(code, reason, "injected fault");
            if code == 429 {
                resp.headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from_static("0"));
            }
            return resp;
        }
        Some(FaultAction::ExpiredContinue) => {
            record(410);
            return status_response(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            );
        }
        Some(FaultAction::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultAction::WatchGone) => {
            record(0);
            let gone = json!({"type": "ERROR", "object": status_body(410, "Expired", "too old resource version")});
            return Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::from(format!("{gone}\n")))
                .unwrap_or_default();
        }
        None => {}
    }

    let missing = shared.lock().missing_collections.clone();
    let Some(route) = parse_route(&path, &missing) else {
        record(404);
        return status_response(
            404,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
        );
    };
    if route.namespace.is_none()
        && route.coll.namespaced
        && route.name.is_none()
        && shared
            .lock()
            .forbidden_cluster_lists
            .contains(route.coll.plural)
    {
        record(403);
        return status_response(
            403,
            "Forbidden",
            &format!(
                "{} is forbidden: User \"system:serviceaccount:egress-guard:egress-auditor\" cannot list resource \"{}\" at the cluster scope",
                route.coll.plural, route.coll.plural
            ),
        );
    }
    if let Some(ns) = &route.namespace {
        let forbidden = {
            let st = shared.lock();
            st.forbidden_namespaces.contains(ns)
                || st
                    .forbidden_resources
                    .contains(&(ns.clone(), route.coll.plural.to_string()))
        };
        if forbidden {
            record(403);
            return status_response(
                403,
                "Forbidden",
                &format!(
                    "{} is forbidden: User \"system:serviceaccount:egress-guard:egress-auditor\" cannot list resource \"{}\" in API group \"\" in the namespace \"{ns}\"",
                    route.coll.plural, route.coll.plural
                ),
            );
        }
    }

    let (status, response) = match (&method, &route.name) {
        (&Method::GET, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            record(0);
            return watch(&shared, &route, &query);
        }
        (&Method::GET, None) => list(&shared, &route, &query),
        (&Method::GET, Some(name)) => get(&shared, &route, name),
        (&Method::POST, None) => create(&shared, &route, body.clone()),
        (&Method::PUT, Some(name)) => replace(&shared, &route, name, body.clone()),
        (&Method::PATCH, Some(name))
            if content_type.as_deref() == Some("application/apply-patch+yaml") =>
        {
            server_side_apply(
                &shared,
                &route,
                name,
                body.clone(),
                query.get("fieldManager").cloned(),
            )
        }
        (&Method::PATCH, Some(name)) => patch(&shared, &route, name, body.clone()),
        (&Method::DELETE, Some(name)) => delete(&shared, &route, name),
        _ => (
            405,
            status_body(405, "MethodNotAllowed", "method not allowed"),
        ),
    };
    record(status);
    json_response(status, &response)
}

fn list(shared: &Shared, route: &Route, query: &BTreeMap<String, String>) -> (u16, Value) {
    let st = shared.lock();
    let all: Vec<&Value> = st
        .objects
        .get(route.coll.plural)
        .map(|m| {
            m.iter()
                .filter(|((ns, _), _)| route.namespace.as_ref().is_none_or(|want| want == ns))
                .map(|(_, o)| o)
                .filter(|o| filter_matches(query, o))
                .collect()
        })
        .unwrap_or_default();
    let offset = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match token
            .strip_prefix("offset-")
            .and_then(|t| t.parse::<usize>().ok())
        {
            Some(o) => o,
            None => {
                return (
                    400,
                    status_body(400, "BadRequest", "invalid continue token"),
                )
            }
        },
        None => 0,
    };
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let page: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|o| list_item(route.coll, o))
        .collect();
    let next = offset.saturating_add(page.len());
    let mut metadata = json!({"resourceVersion": st.resource_version.to_string()});
    if next < all.len() {
        metadata["continue"] = json!(format!("offset-{next}"));
        metadata["remainingItemCount"] = json!(all.len() - next);
    }
    (
        200,
        json!({
            "kind": format!("{}List", route.coll.kind),
            "apiVersion": route.coll.group_version,
            "metadata": metadata,
            "items": page,
        }),
    )
}

fn get(shared: &Shared, route: &Route, name: &str) -> (u16, Value) {
    let st = shared.lock();
    let key = (
        route.namespace.clone().unwrap_or_default(),
        name.to_string(),
    );
    match st.objects.get(route.coll.plural).and_then(|m| m.get(&key)) {
        Some(o) => (200, o.clone()),
        None => (
            404,
            status_body(
                404,
                "NotFound",
                &format!("{} \"{name}\" not found", route.coll.plural),
            ),
        ),
    }
}

fn create(shared: &Shared, route: &Route, body: Option<Value>) -> (u16, Value) {
    let Some(mut object) = body else {
        return (400, status_body(400, "BadRequest", "no body"));
    };
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_string) else {
        return (
            422,
            status_body(422, "Invalid", "metadata.name: Required value"),
        );
    };
    let ns = route.namespace.clone().unwrap_or_default();
    if route.coll.namespaced {
        if let Some(body_ns) = object["metadata"]["namespace"].as_str() {
            if body_ns != ns {
                return (
                    400,
                    status_body(
                        400,
                        "BadRequest",
                        "the namespace of the object does not match the namespace on the request",
                    ),
                );
            }
        }
        object["metadata"]["namespace"] = json!(ns);
    }
    let mut st = shared.lock();
    if st
        .objects
        .get(route.coll.plural)
        .is_some_and(|m| m.contains_key(&(ns.clone(), name.clone())))
    {
        return (
            409,
            status_body(
                409,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", route.coll.plural),
            ),
        );
    }
    let stored = store(&mut st, route.coll, ns, name, object);
    publish_locked(shared, &mut st, route.coll, "ADDED", stored.clone());
    (201, stored)
}

fn replace(shared: &Shared, route: &Route, name: &str, body: Option<Value>) -> (u16, Value) {
    let Some(object) = body else {
        return (400, status_body(400, "BadRequest", "no body"));
    };
    let ns = route.namespace.clone().unwrap_or_default();
    let mut st = shared.lock();
    let Some(current) = st
        .objects
        .get(route.coll.plural)
        .and_then(|m| m.get(&(ns.clone(), name.to_string())))
        .cloned()
    else {
        return (
            404,
            status_body(
                404,
                "NotFound",
                &format!("{} \"{name}\" not found", route.coll.plural),
            ),
        );
    };
    if let Some(rv) = object["metadata"]["resourceVersion"].as_str() {
        if Some(rv) != current["metadata"]["resourceVersion"].as_str() {
            return (409, conflict());
        }
    }
    let part = if route.status {
        Part::Status
    } else {
        Part::Object
    };
    let stored = store_part(&mut st, route.coll, ns, name.to_string(), object, part);
    publish_locked(shared, &mut st, route.coll, "MODIFIED", stored.clone());
    (200, stored)
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn patch(shared: &Shared, route: &Route, name: &str, body: Option<Value>) -> (u16, Value) {
    let Some(p) = body else {
        return (400, status_body(400, "BadRequest", "no body"));
    };
    let ns = route.namespace.clone().unwrap_or_default();
    let mut st = shared.lock();
    let Some(mut current) = st
        .objects
        .get(route.coll.plural)
        .and_then(|m| m.get(&(ns.clone(), name.to_string())))
        .cloned()
    else {
        return (
            404,
            status_body(
                404,
                "NotFound",
                &format!("{} \"{name}\" not found", route.coll.plural),
            ),
        );
    };
    if let Some(rv) = p["metadata"]["resourceVersion"].as_str() {
        if Some(rv) != current["metadata"]["resourceVersion"].as_str() {
            return (409, conflict());
        }
    }
    merge_patch(&mut current, &p);
    let part = if route.status {
        Part::Status
    } else {
        Part::Object
    };
    let stored = store_part(&mut st, route.coll, ns, name.to_string(), current, part);
    publish_locked(shared, &mut st, route.coll, "MODIFIED", stored.clone());
    (200, stored)
}

/// Removes from `object` the fields `before` had and `now` lacks (objects compared key by key,
/// anything else as a whole).
fn remove_omitted(object: &mut Value, before: &Value, now: &Value) {
    let (Some(target), Some(before)) = (object.as_object_mut(), before.as_object()) else {
        return;
    };
    for (key, old) in before {
        match now.get(key) {
            None => {
                target.remove(key);
            }
            Some(new) => {
                if let Some(child) = target.get_mut(key) {
                    remove_omitted(child, old, new);
                }
            }
        }
    }
}

fn conflict() -> Value {
    status_body(
        409,
        "Conflict",
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

/// Server-side apply, as far as one field manager goes: the object is created, or the applied
/// fields are merged into it (the request's `fieldManager` and `force` are recorded).
fn server_side_apply(
    shared: &Shared,
    route: &Route,
    name: &str,
    body: Option<Value>,
    manager: Option<String>,
) -> (u16, Value) {
    let Some(applied) = body else {
        return (400, status_body(400, "BadRequest", "no body"));
    };
    if applied["metadata"]["name"].as_str() != Some(name) {
        return (
            400,
            status_body(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
            ),
        );
    }
    let ns = route.namespace.clone().unwrap_or_default();
    let mut st = shared.lock();
    let current = st
        .objects
        .get(route.coll.plural)
        .and_then(|m| m.get(&(ns.clone(), name.to_string())))
        .cloned();
    let part = if route.status {
        Part::Status
    } else {
        Part::Object
    };
    let key = (
        route.coll.plural.to_string(),
        ns.clone(),
        name.to_string(),
        manager.unwrap_or_default(),
    );
    let before = st.applied.insert(key, applied.clone());
    let (object, event, code) = match current {
        Some(mut current) => {
            if let Some(before) = &before {
                remove_omitted(&mut current, before, &applied);
            }
            merge_patch(&mut current, &applied);
            (current, "MODIFIED", 200)
        }
        None => (applied, "ADDED", 201),
    };
    let stored = store_part(&mut st, route.coll, ns, name.to_string(), object, part);
    publish_locked(shared, &mut st, route.coll, event, stored.clone());
    (code, stored)
}

fn delete(shared: &Shared, route: &Route, name: &str) -> (u16, Value) {
    let ns = route.namespace.clone().unwrap_or_default();
    let mut st = shared.lock();
    match st
        .objects
        .get_mut(route.coll.plural)
        .and_then(|m| m.remove(&(ns, name.to_string())))
    {
        Some(obj) => {
            st.resource_version += 1;
            publish_locked(shared, &mut st, route.coll, "DELETED", obj.clone());
            (200, obj)
        }
        None => (
            404,
            status_body(
                404,
                "NotFound",
                &format!("{} \"{name}\" not found", route.coll.plural),
            ),
        ),
    }
}

fn publish_locked(
    shared: &Shared,
    st: &mut ApiState,
    coll: &'static Collection,
    event_type: &'static str,
    object: Value,
) {
    let ev = WatchEvent {
        rv: st.resource_version,
        collection: coll.plural,
        namespace: object["metadata"]["namespace"].as_str().map(str::to_string),
        event_type,
        object,
    };
    st.log.push(ev.clone());
    let _ = shared.events.send(ev);
}

/// `watch=true`: past events newer than `resourceVersion`, then live ones, one JSON object per
/// line, until `timeoutSeconds`.
fn watch(shared: &Shared, route: &Route, query: &BTreeMap<String, String>) -> Response {
    let since: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(60);
    let coll = route.coll;
    let namespace = route.namespace.clone();
    let query = query.clone();
    let wanted = move |ev: &WatchEvent| {
        ev.event_type != EXPIRED
            && ev.collection == coll.plural
            && namespace
                .as_ref()
                .is_none_or(|ns| ev.namespace.as_ref() == Some(ns))
            && filter_matches(&query, &ev.object)
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let (backlog, mut live) = {
        let st = shared.lock();
        let backlog: Vec<WatchEvent> = if since == 0 {
            // "Any" version: synthesize ADDED for what exists now, as the API server does.
            st.objects
                .get(coll.plural)
                .map(|m| {
                    m.values()
                        .map(|o| WatchEvent {
                            rv: st.resource_version,
                            collection: coll.plural,
                            namespace: o["metadata"]["namespace"].as_str().map(str::to_string),
                            event_type: "ADDED",
                            object: o.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        } else {
            st.log.iter().filter(|e| e.rv > since).cloned().collect()
        };
        (backlog, shared.events.subscribe())
    };
    let line = |ev: &WatchEvent| {
        let mut s = json!({"type": ev.event_type, "object": ev.object}).to_string();
        s.push('\n');
        Bytes::from(s)
    };
    tokio::spawn(async move {
        for ev in backlog.iter().filter(|e| wanted(e)) {
            if tx.send(line(ev)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                ev = live.recv() => match ev {
                    Ok(ev) if ev.event_type == EXPIRED && ev.collection == coll.plural => {
                        let gone = json!({"type": "ERROR", "object": status_body(410, "Expired", "too old resource version")});
                        let _ = tx.send(Bytes::from(format!("{gone}\n"))).await;
                        return;
                    }
                    Ok(ev) if ev.rv > since && wanted(&ev) => {
                        if tx.send(line(&ev)).await.is_err() { return; }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let gone = json!({"type": "ERROR", "object": status_body(410, "Expired", "too old resource version")});
                        let _ = tx.send(Bytes::from(format!("{gone}\n"))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Alertmanager and webhook receivers

/// An alert as Alertmanager keeps it.
#[derive(Debug, Clone)]
pub struct StoredAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: Value,
    pub starts_at: String,
    pub ends_at: String,
}

#[derive(Default)]
struct ReceiverState {
    attempts: usize,
    posts: Vec<(String, Value)>,
    alerts: BTreeMap<Vec<(String, String)>, StoredAlert>,
    fail_with: Option<u16>,
}

/// Records every POST (path, JSON body). On `/api/v2/alerts` it keeps alerts by label set as
/// Alertmanager does and answers `GET /api/v2/alerts` with the ones not yet ended.
pub struct MockReceiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for MockReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl MockReceiver {
    pub async fn start() -> MockReceiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = Router::new().fallback(receive).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockReceiver {
            addr,
            state,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every following request is answered with this status (None: normal answers).
    pub fn fail_with(&self, status: Option<u16>) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fail_with = status;
    }

    /// Every request received, failed ones included.
    pub fn attempts(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .attempts
    }

    pub fn posts(&self) -> Vec<(String, Value)> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .posts
            .clone()
    }

    pub fn alerts(&self) -> Vec<StoredAlert> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .alerts
            .values()
            .cloned()
            .collect()
    }
}

async fn receive(State(state): State<Arc<Mutex<ReceiverState>>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let bytes = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    st.attempts += 1;
    if let Some(code) = st.fail_with {
        return json_response(code, &json!({"error": "injected failure"}));
    }
    let now = jiff::Timestamp::now();
    if method == Method::GET && path == "/api/v2/alerts" {
        let filters: Vec<(String, String)> = query
            .get("filter")
            .map(|f| {
                f.split(',')
                    .filter_map(|m| m.split_once('='))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let out: Vec<Value> = st
            .alerts
            .values()
            .filter(|a| {
                a.ends_at
                    .parse::<jiff::Timestamp>()
                    .map(|e| e > now)
                    .unwrap_or(true)
            })
            .filter(|a| filters.iter().all(|(k, v)| a.labels.get(k) == Some(v)))
            .map(|a| {
                json!({"labels": a.labels, "annotations": a.annotations, "startsAt": a.starts_at, "endsAt": a.ends_at,
                       "status": {"state": "active"}})
            })
            .collect();
        return json_response(200, &Value::Array(out));
    }
    if method != Method::POST {
        return json_response(405, &json!({"error": "method not allowed"}));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return json_response(400, &json!({"error": "body is not JSON"}));
    };
    st.posts.push((path.clone(), body.clone()));
    if path == "/api/v2/alerts" {
        let Some(list) = body.as_array() else {
            return json_response(400, &json!({"error": "expected an array"}));
        };
        for a in list {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(a["labels"].clone()).unwrap_or_default();
            if labels.is_empty() {
                return json_response(400, &json!({"error": "labels required"}));
            }
            let key: Vec<(String, String)> = labels.clone().into_iter().collect();
            let starts = a["startsAt"].as_str().unwrap_or("").to_string();
            let ends = a["endsAt"].as_str().unwrap_or("").to_string();
            let entry = st.alerts.entry(key).or_insert(StoredAlert {
                labels,
                annotations: a["annotations"].clone(),
                starts_at: starts.clone(),
                ends_at: ends.clone(),
            });
            entry.ends_at = ends;
            entry.annotations = a["annotations"].clone();
        }
    }
    json_response(200, &json!({}))
}
