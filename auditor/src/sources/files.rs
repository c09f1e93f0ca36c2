//! Reads Kubernetes manifests from files and directories into a [`Snapshot`].
//!
//! Accepts multi-document YAML, JSON (one value or a stream), `kind: List` and `kubectl get -o
//! yaml|json` output. Pods and the pod templates of Deployment, StatefulSet, DaemonSet, ReplicaSet,
//! ReplicationController, Job and CronJob become [`Workload`]s; Namespaces, NetworkPolicies and the
//! mesh ConfigMap (`istio` in `istio-system`, key `mesh`) are kept; Istio objects (WasmPlugin,
//! EnvoyFilter, ServiceEntry) and Gateway API Gateways go to [`Snapshot::extra`]; anything else
//! is skipped and counted.
//!
//! Only the parts the checks judge are deserialized into `k8s-openapi` types, so a wrong type there
//! is an error naming the file, document, line and field; the rest of an object is not read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, PodSpec, PodStatus, PodTemplateSpec};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::json_stream;
use super::typed_read::{self, TypedDoc, TypedPod, TypedWorkload};
use crate::snapshot::{
    is_mesh_config_map, json_type, MeshConfig, Snapshot, Workload, WorkloadKind, GATEWAY_API_GROUP,
    MESH_CONFIG_KEY,
};

/// What the inputs held, for the scan summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InputSummary {
    pub files: usize,
    pub documents: usize,
    /// Objects read, by kind (list wrappers not counted, their items are).
    pub objects_by_kind: BTreeMap<String, usize>,
    /// Objects skipped because their kind is not judged, by kind (`apiVersion/kind` when the
    /// apiVersion is not the group this kind belongs to).
    pub skipped_kinds: BTreeMap<String, usize>,
    pub skipped: usize,
    pub workloads: usize,
    pub mesh_config: bool,
}

impl InputSummary {
    fn merge(&mut self, other: InputSummary) {
        self.files += other.files;
        self.documents += other.documents;
        for (k, v) in other.objects_by_kind {
            *self.objects_by_kind.entry(k).or_default() += v;
        }
        for (k, v) in other.skipped_kinds {
            *self.skipped_kinds.entry(k).or_default() += v;
        }
        self.skipped += other.skipped;
        self.workloads += other.workloads;
        self.mesh_config |= other.mesh_config;
    }
}

/// Where in the input something is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    /// 1-based document index in the file.
    pub document: usize,
    /// 1-based line (the document's first line when nothing more precise is known).
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: document {}",
            self.path.display(),
            self.line,
            self.document
        )
    }
}

/// Input that cannot be read. Every variant names the file; parse and object errors also the
/// document and line.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no .yaml, .yml or .json files found", path.display())]
    NoManifests { path: PathBuf },
    #[error("{}: not UTF-8 text", path.display())]
    NotText { path: PathBuf },
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    #[error("{at}: {object}: {field}: {message}")]
    Object {
        at: Location,
        /// `Kind namespace/name` of the object (or of the list item).
        object: String,
        /// Dotted path of the offending field inside the object.
        field: String,
        message: String,
    },
}

impl InputError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            InputError::Io { path, .. }
            | InputError::NoManifests { path }
            | InputError::NotText { path } => path,
            InputError::Syntax { at, .. } | InputError::Object { at, .. } => &at.path,
        }
    }
}

/// The result of reading the inputs.
#[derive(Debug, Default)]
pub struct LoadedInput {
    pub snapshot: Snapshot,
    pub summary: InputSummary,
    /// Where each judged object was read, keyed by [`origin_key`].
    pub origins: BTreeMap<String, Location>,
}

impl LoadedInput {
    /// Adds what another (later) file held: later namespaces and mesh config replace earlier ones.
    fn merge(&mut self, other: LoadedInput) {
        let LoadedInput {
            snapshot,
            summary,
            origins,
        } = other;
        for (_, ns) in snapshot.namespaces {
            self.snapshot.add_namespace(ns);
        }
        for (_, nps) in snapshot.network_policies {
            for np in nps {
                self.snapshot.add_network_policy(np);
            }
        }
        if snapshot.mesh.is_some() {
            self.snapshot.mesh = snapshot.mesh;
        }
        self.snapshot.workloads.extend(snapshot.workloads);
        self.snapshot.extra.extend(snapshot.extra);
        self.summary.merge(summary);
        self.origins.extend(origins);
    }

    /// The location of the object a finding is about.
    pub fn origin_of(&self, finding: &crate::finding::Finding) -> Option<&Location> {
        self.origins.get(&origin_key(
            &finding.kind,
            finding.namespace.as_deref(),
            &finding.name,
        ))
    }
}

/// Key of an object in [`LoadedInput::origins`]: kind, namespace (empty for cluster-scoped) and name.
pub fn origin_key(kind: &str, namespace: Option<&str>, name: &str) -> String {
    format!("{kind}|{}|{name}", namespace.unwrap_or(""))
}

/// Reads every path (files, or directories walked recursively for `.yaml`, `.yml`, `.json`;
/// `-` is standard input). All errors are collected, so a directory with several bad files names
/// each of them; with any error nothing is returned.
pub fn load_paths(paths: &[PathBuf]) -> Result<LoadedInput, Vec<InputError>> {
    let (mut loaded, per_file) =
        read_paths_with(paths, Vec::new, |v: &mut Vec<Workload>, w| v.push(w))?;
    for workloads in per_file {
        loaded.snapshot.workloads.extend(workloads);
    }
    Ok(loaded)
}

/// Reads the paths like [`load_paths`], but instead of keeping workloads hands each one, as soon
/// as it is read, to `on_workload` together with a state of its file (`new_state` makes one per
/// file). Files are read on several threads; the states come back in file order, and the returned
/// snapshot (everything except workloads) is merged in file order too, so the result does not
/// depend on scheduling. Lets a scan judge any number of pods in bounded memory. On error, the
/// states are dropped.
pub fn read_paths_with<S, N, F>(
    paths: &[PathBuf],
    new_state: N,
    on_workload: F,
) -> Result<(LoadedInput, Vec<S>), Vec<InputError>>
where
    S: Send,
    N: Fn() -> S + Sync,
    F: Fn(&mut S, Workload) + Sync,
{
    let mut errors = Vec::new();
    let mut files = Vec::new();
    for p in paths {
        if let Err(e) = collect_files(p, &mut files) {
            errors.push(e);
        }
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let threads = cores.min(files.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let streamed = Streaming {
        min_bytes: LARGE_JSON_BYTES,
        block: json_stream::BLOCK,
        threads: cores,
    };
    let read_one = |file: &PathBuf| -> Vec<FileOutcome<S>> {
        read_large_list(file, &streamed, &new_state, &on_workload)
            .unwrap_or_else(|| vec![read_whole(file, &new_state, &on_workload)])
    };
    let mut results: Vec<(usize, Vec<FileOutcome<S>>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(file) = files.get(i) else { break };
                        done.push((i, read_one(file)));
                    }
                    done
                })
            })
            .collect();
        join_all(workers)
    });
    results.sort_by_key(|(i, _)| *i);

    let (out, states) = merge_outcomes(results.into_iter().flat_map(|(_, p)| p), &mut errors);
    if errors.is_empty() {
        Ok((out, states))
    } else {
        Err(errors)
    }
}

/// Merges what files (or parts of a file) gave, in order: their objects into one input, their
/// errors into `errors`, their states into a list.
fn merge_outcomes<S>(
    outcomes: impl Iterator<Item = FileOutcome<S>>,
    errors: &mut Vec<InputError>,
) -> (LoadedInput, Vec<S>) {
    let mut out = LoadedInput::default();
    let mut states = Vec::new();
    for (part, errs, state) in outcomes {
        errors.extend(errs);
        out.merge(part);
        states.push(state);
    }
    (out, states)
}

/// Joins scoped workers, each giving a list, into one list (a worker's panic goes on).
fn join_all<T>(workers: Vec<std::thread::ScopedJoinHandle<'_, Vec<T>>>) -> Vec<T> {
    workers
        .into_iter()
        .flat_map(|w| {
            w.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
        .collect()
}

/// A `.json` file at least this large is first read as a List streamed item by item.
const LARGE_JSON_BYTES: u64 = 16 << 20;

/// How [`read_large_list`] streams (smaller than in a scan in tests).
struct Streaming {
    /// Files smaller than this are read whole.
    min_bytes: u64,
    /// Bytes read at a time.
    block: usize,
    threads: usize,
}

/// Reads a large `.json` file that is one List (what `kubectl get pods -A -o json` prints) without
/// holding it in memory: the file is cut into its items as it is read ([`json_stream`]), and the
/// items are parsed and handed to `on_workload` on `threads` workers, a block of the file at a
/// time, each block with a state of its own (its memory is used again for a later block). The
/// parts come back in item order, the first one counting the file and its one document, so merged
/// in order they are what reading the file whole gives. `None` when the file is small, is not
/// such a List, cannot be opened, or holds an item that is not JSON: the caller reads it whole,
/// the general way, which also gives the errors.
fn read_large_list<S, N, F>(
    file: &Path,
    how: &Streaming,
    new_state: &N,
    on_workload: &F,
) -> Option<Vec<FileOutcome<S>>>
where
    S: Send,
    N: Fn() -> S + Sync,
    F: Fn(&mut S, Workload) + Sync,
{
    let is_json = file.extension().and_then(|e| e.to_str()) == Some("json");
    if !is_json || std::fs::metadata(file).ok()?.len() < how.min_bytes {
        return None;
    }
    let reader = std::fs::File::open(file).ok()?;
    let threads = how.threads.max(1);
    let (send, receive) = std::sync::mpsc::sync_channel::<json_stream::Batch>(threads * 2);
    let receive = std::sync::Mutex::new(receive);
    let (give_back, given_back) = std::sync::mpsc::channel::<Vec<u8>>();
    let failed = std::sync::atomic::AtomicBool::new(false);
    let read_batch = |batch: &json_stream::Batch| -> Option<(usize, FileOutcome<S>)> {
        let texts: Vec<&str> = batch
            .item_bytes()
            .map(std::str::from_utf8)
            .collect::<Result<_, _>>()
            .ok()?;
        let mut out = LoadedInput::default();
        let mut errs = Vec::new();
        let mut state = new_state();
        let mut sink = |w: Workload| on_workload(&mut state, w);
        let at = Location {
            path: file.to_path_buf(),
            document: 1,
            line: batch.line,
        };
        let all_json = ManifestReader::new(file, &mut out, &mut errs, &mut sink)
            .read_list_items(&at, (batch.first..).zip(texts));
        all_json.then_some((batch.first, (out, errs, state)))
    };
    let (listed, mut parts) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let give_back = give_back.clone();
                let (receive, failed, read_batch) = (&receive, &failed, &read_batch);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let batch = match receive.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => break,
                        };
                        let Ok(batch) = batch else { break };
                        // After a failure the rest is only drained: the file is read again.
                        if !failed.load(std::sync::atomic::Ordering::Relaxed) {
                            match read_batch(&batch) {
                                Some(part) => done.push(part),
                                None => failed.store(true, std::sync::atomic::Ordering::Relaxed),
                            }
                        }
                        let _ = give_back.send(batch.block);
                    }
                    done
                })
            })
            .collect();
        drop(give_back);
        let listed = json_stream::read_list(
            reader,
            how.block,
            &mut || given_back.try_recv().unwrap_or_default(),
            // A send fails only when every worker is gone, which a panic explains.
            &mut |batch| drop(send.send(batch)),
        );
        drop(send);
        (listed, join_all(workers))
    });
    if !matches!(listed, Ok(Some(_))) || failed.into_inner() {
        return None;
    }
    parts.sort_by_key(|(first, _)| *first);
    let mut head = LoadedInput::default();
    head.summary.files = 1;
    head.summary.documents = 1;
    let mut outcomes = vec![(head, Vec::new(), new_state())];
    outcomes.extend(parts.into_iter().map(|(_, part)| part));
    Some(outcomes)
}

/// Reads `file` whole, handing each workload to `on_workload` with a state of its own.
fn read_whole<S>(
    file: &Path,
    new_state: &impl Fn() -> S,
    on_workload: &impl Fn(&mut S, Workload),
) -> FileOutcome<S> {
    let mut out = LoadedInput::default();
    let mut errs = Vec::new();
    let mut state = new_state();
    match read_file(file) {
        Ok(text) => {
            let mut sink = |w: Workload| on_workload(&mut state, w);
            ManifestReader::new(file, &mut out, &mut errs, &mut sink).read_text(&text);
            out.summary.files = 1;
        }
        Err(e) => errs.push(e),
    }
    (out, errs, state)
}

/// What reading one file gave: its objects, its errors and its caller state.
type FileOutcome<S> = (LoadedInput, Vec<InputError>, S);

fn read_file(file: &Path) -> Result<String, InputError> {
    if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|source| {
            InputError::Io {
                path: file.to_path_buf(),
                source,
            }
        })?;
        return Ok(s);
    }
    let bytes = std::fs::read(file).map_err(|source| InputError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| InputError::NotText {
        path: file.to_path_buf(),
    })
}

/// Reads manifests from a string, as if it were the file `name`.
pub fn load_str(name: &str, text: &str) -> Result<LoadedInput, Vec<InputError>> {
    let mut out = LoadedInput::default();
    let mut errors = Vec::new();
    let path = PathBuf::from(name);
    let mut workloads = Vec::new();
    let mut sink = |w: Workload| workloads.push(w);
    ManifestReader::new(&path, &mut out, &mut errors, &mut sink).read_text(text);
    out.snapshot.workloads = workloads;
    out.summary.files = 1;
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn is_manifest_name(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    if path.as_os_str() == "-" {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let meta = std::fs::metadata(path).map_err(|source| InputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        // A file named on the command line is read whatever its extension.
        out.push(path.to_path_buf());
        return Ok(());
    }
    let before = out.len();
    let mut visited = BTreeSet::new();
    walk(path, out, &mut visited)?;
    if out.len() == before {
        return Err(InputError::NoManifests {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn walk(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    visited: &mut BTreeSet<PathBuf>,
) -> Result<(), InputError> {
    let io = |source| InputError::Io {
        path: dir.to_path_buf(),
        source,
    };
    // Symlinked directories are followed once.
    let canonical = std::fs::canonicalize(dir).map_err(io)?;
    if !visited.insert(canonical) {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for entry in entries {
        let meta = std::fs::metadata(&entry).map_err(|source| InputError::Io {
            path: entry.clone(),
            source,
        })?;
        if meta.is_dir() {
            walk(&entry, out, visited)?;
        } else if is_manifest_name(&entry) {
            out.push(entry);
        }
    }
    Ok(())
}

/// Splits YAML text into documents at `---` lines (column 0), dropping `...` end markers.
/// Returns each document's text with its 1-based first line. A `---` at column 0 always starts a
/// document in valid YAML (block scalars are indented, and markers are not allowed in flow style).
pub fn split_yaml_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    let mut in_doc = true;
    for (idx, line) in text.split_inclusive('\n').enumerate() {
        let line_no = idx + 1;
        let body = line.trim_end_matches(['\n', '\r']);
        let is_start = body == "---" || body.starts_with("--- ") || body.starts_with("---\t");
        let is_end = body == "..." || body.starts_with("... ");
        if is_start || is_end {
            if in_doc && offset > start {
                docs.push((start_line, &text[start..offset]));
            }
            if is_start {
                // Content may follow the marker on the same line.
                start = offset + 3;
                start_line = line_no;
                in_doc = true;
            } else {
                start = offset + line.len();
                start_line = line_no + 1;
                in_doc = false;
            }
        } else if !in_doc && !body.trim().is_empty() && !body.trim_start().starts_with('#') {
            // Content after `...` without a new `---` starts an implicit document.
            start = offset;
            start_line = line_no;
            in_doc = true;
        }
        offset += line.len();
    }
    if in_doc && text.len() > start {
        docs.push((start_line, &text[start..]));
    }
    docs
}

/// Parser options for one document of `len` bytes. The default budget caps a document at 250,000
/// nodes, which one `kubectl get pods -A -o yaml` List exceeds; node and event caps grow with the
/// document's size instead (a node takes at least a byte, so this cannot be abused), while the
/// alias and anchor caps that stop expansion bombs stay as they are.
fn yaml_options(len: usize) -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    // The caller reports the location; a source snippet would only repeat the document.
    options.with_snippet = false;
    // kubectl reads only `true`/`false` as booleans.
    options.strict_booleans = true;
    if let Some(budget) = options.budget.as_mut() {
        budget.max_nodes = budget.max_nodes.max(len);
        budget.max_events = budget.max_events.max(len.saturating_mul(2));
        budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(len);
    }
    options
}

struct ManifestReader<'a> {
    path: &'a Path,
    snapshot: &'a mut Snapshot,
    summary: &'a mut InputSummary,
    origins: &'a mut BTreeMap<String, Location>,
    errors: &'a mut Vec<InputError>,
    /// Receives every workload read.
    on_workload: &'a mut dyn FnMut(Workload),
    /// Try [`typed_read`] first (off only to compare it with the general reader in tests).
    direct: bool,
    /// Documents [`typed_read`] read.
    direct_documents: usize,
}

/// Position of the object being read.
struct Here<'p> {
    at: Location,
    /// Path of the object inside the document (`items[3].`), empty at top level.
    prefix: &'p str,
}

impl<'a> ManifestReader<'a> {
    fn new(
        path: &'a Path,
        out: &'a mut LoadedInput,
        errors: &'a mut Vec<InputError>,
        on_workload: &'a mut dyn FnMut(Workload),
    ) -> Self {
        ManifestReader {
            path,
            snapshot: &mut out.snapshot,
            summary: &mut out.summary,
            origins: &mut out.origins,
            errors,
            on_workload,
            direct: true,
            direct_documents: 0,
        }
    }

    fn remember(&mut self, kind: &str, namespace: Option<&str>, name: &str, here: &Here<'_>) {
        self.origins
            .insert(origin_key(kind, namespace, name), here.at.clone());
    }

    fn location(&self, document: usize, line: usize) -> Location {
        Location {
            path: self.path.to_path_buf(),
            document,
            line,
        }
    }

    fn read_text(&mut self, text: &str) {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // JSON is YAML too; the JSON parser is only faster and more precise about errors.
        if self.path.extension().and_then(|e| e.to_str()) == Some("json") {
            self.read_json(text);
        } else {
            self.read_yaml(text);
        }
    }

    fn read_json(&mut self, text: &str) {
        // A List (what `kubectl get -o json` prints): one item at a time, each typed at once when
        // it is a workload, else read the general way.
        if let Some(items) = self.direct.then(|| typed_read::json_list(text)).flatten() {
            self.summary.documents += 1;
            let at = self.location(1, line_at(text, 0));
            self.read_list_items(&at, items.iter().map(|raw| raw.get()).enumerate());
            return;
        }
        // One object (a workload): typed at once.
        let mut de = serde_json::Deserializer::from_str(text);
        if let Some(typed) = self
            .direct
            .then(|| TypedDoc::deserialize(&mut de).ok())
            .flatten()
        {
            if de.end().is_ok() {
                let here = Here {
                    at: self.location(1, line_at(text, 0)),
                    prefix: "",
                };
                if self.read_typed(typed, &here) {
                    self.summary.documents += 1;
                    return;
                }
            }
        }
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        let mut document = 0;
        loop {
            let offset = stream.byte_offset();
            let line = line_at(text, offset);
            match stream.next() {
                None => break,
                Some(Ok(value)) => {
                    document += 1;
                    self.summary.documents += 1;
                    let here = Here {
                        at: self.location(document, line),
                        prefix: "",
                    };
                    self.read_object(value, &here);
                }
                Some(Err(e)) => {
                    self.errors.push(InputError::Syntax {
                        at: self.location(document + 1, e.line()),
                        message: format!("invalid JSON at column {}: {e}", e.column()),
                    });
                    break;
                }
            }
        }
    }

    /// Reads the items of a List (index and text), each typed at once when it is a workload,
    /// else the general way. `false` when an item is not JSON at all (recorded as an error of the
    /// List).
    fn read_list_items<'t>(
        &mut self,
        at: &Location,
        items: impl IntoIterator<Item = (usize, &'t str)>,
    ) -> bool {
        let mut all_json = true;
        for (i, raw) in items {
            if let Some(w) = typed_read::json_item(raw) {
                if workload_group_ok(w.kind, w.api_version.as_deref()) {
                    self.direct_documents += 1;
                    let here = Here {
                        at: at.clone(),
                        prefix: "",
                    };
                    self.typed_workload(w, &here);
                    continue;
                }
            }
            let prefix = format!("items[{i}].");
            let here = Here {
                at: at.clone(),
                prefix: &prefix,
            };
            match serde_json::from_str::<Value>(raw) {
                Ok(value) => self.read_object(value, &here),
                Err(e) => {
                    all_json = false;
                    self.object_error(&here, "List", "items", e.to_string());
                }
            }
        }
        all_json
    }

    fn read_yaml(&mut self, text: &str) {
        for (index, (start_line, doc)) in split_yaml_documents(text).into_iter().enumerate() {
            let document = index + 1;
            if doc.lines().all(|l| {
                let t = l.trim();
                t.is_empty() || t.starts_with('#')
            }) {
                continue;
            }
            let here = Here {
                at: self.location(document, first_content_line(start_line, doc)),
                prefix: "",
            };
            if let Some(typed) = self.direct.then(|| typed_read::yaml(doc)).flatten() {
                if self.read_typed(typed, &here) {
                    self.summary.documents += 1;
                    continue;
                }
            }
            match serde_saphyr::from_str_with_options::<Value>(doc, yaml_options(doc.len())) {
                Ok(Value::Null) => continue,
                Ok(value) => {
                    self.summary.documents += 1;
                    self.read_object(value, &here);
                }
                Err(e) => {
                    let line = e
                        .location()
                        .map(|l| start_line + (l.line() as usize).saturating_sub(1))
                        .unwrap_or(start_line);
                    let column = e.location().map(|l| l.column());
                    let message = match column {
                        Some(c) => format!("invalid YAML at column {c}: {}", yaml_message(&e)),
                        None => format!("invalid YAML: {}", yaml_message(&e)),
                    };
                    self.errors.push(InputError::Syntax {
                        at: self.location(document, line),
                        message,
                    });
                }
            }
        }
    }

    /// Takes a document [`typed_read`] read. `false` (nothing recorded) when the general reader
    /// must read it instead: a workload whose apiVersion is not its kind's group, which the
    /// general reader skips and counts.
    fn read_typed(&mut self, doc: TypedDoc, here: &Here<'_>) -> bool {
        match doc {
            TypedDoc::Workload(w) => {
                if !workload_group_ok(w.kind, w.api_version.as_deref()) {
                    return false;
                }
                self.typed_workload(*w, here);
            }
            TypedDoc::List(items) => {
                if !items
                    .iter()
                    .all(|w| workload_group_ok(w.kind, w.api_version.as_deref()))
                {
                    return false;
                }
                for w in items {
                    self.typed_workload(w, here);
                }
            }
        }
        self.direct_documents += 1;
        true
    }

    fn typed_workload(&mut self, w: TypedWorkload, here: &Here<'_>) {
        let kind = w.kind;
        self.count(kind.as_str());
        let object_meta = w.metadata.unwrap_or_default();
        let namespace = crate::snapshot::namespace_of(&object_meta);
        let name = object_meta.name.clone().unwrap_or_default();
        let workload = match w.pod {
            TypedPod::Pod { spec, status } => Workload {
                kind,
                namespace,
                name,
                meta: object_meta,
                spec,
                status,
            },
            TypedPod::Template { metadata, spec } => Workload {
                kind,
                namespace,
                name,
                meta: metadata.unwrap_or_default(),
                spec,
                status: None,
            },
        };
        self.emit_workload(workload, here);
    }

    fn emit_workload(&mut self, workload: Workload, here: &Here<'_>) {
        self.summary.workloads += 1;
        self.remember(
            workload.kind.as_str(),
            Some(&workload.namespace),
            &workload.name,
            here,
        );
        (self.on_workload)(workload);
    }

    fn object_error(&mut self, here: &Here<'_>, object: &str, field: &str, message: String) {
        self.errors.push(InputError::Object {
            at: here.at.clone(),
            object: object.to_string(),
            field: format!("{}{}", here.prefix, field),
            message,
        });
    }

    fn skip(&mut self, what: String) {
        self.summary.skipped += 1;
        *self.summary.skipped_kinds.entry(what).or_default() += 1;
    }

    fn count(&mut self, kind: &str) {
        *self
            .summary
            .objects_by_kind
            .entry(kind.to_string())
            .or_default() += 1;
    }

    fn read_object(&mut self, value: Value, here: &Here<'_>) {
        let Value::Object(mut obj) = value else {
            let found = json_type(&value);
            self.object_error(
                here,
                "document",
                "(root)",
                format!("expected a Kubernetes object (a mapping with kind), found {found}"),
            );
            return;
        };
        let kind = match obj.get("kind") {
            None | Some(Value::Null) => {
                self.skip("(no kind)".to_string());
                return;
            }
            Some(Value::String(k)) => k.clone(),
            Some(other) => {
                let found = json_type(other);
                self.object_error(
                    here,
                    "object",
                    "kind",
                    format!("expected a string, found {found}"),
                );
                return;
            }
        };
        let api_version = match obj.get("apiVersion") {
            None | Some(Value::Null) => None,
            Some(Value::String(v)) => Some(v.clone()),
            Some(other) => {
                let found = json_type(other);
                self.object_error(
                    here,
                    &kind,
                    "apiVersion",
                    format!("expected a string, found {found}"),
                );
                return;
            }
        };

        if kind == "List" || (kind.ends_with("List") && obj.contains_key("items")) {
            self.read_list(&kind, obj.remove("items"), here);
            return;
        }

        let group = api_version.as_deref().map(api_group);
        let group_ok = |allowed: &[&str]| group.is_none_or(|g| allowed.contains(&g));

        let meta = match self.metadata(&mut obj, here, &kind) {
            Some(m) => m,
            None => return,
        };
        let label = object_label(&kind, &meta);

        if let Some(wk) = WorkloadKind::from_kind(&kind) {
            if !workload_group_ok(wk, api_version.as_deref()) {
                self.skip(format!("{}/{kind}", api_version.unwrap_or_default()));
                return;
            }
            self.count(&kind);
            self.read_workload(wk, meta, obj, here, &label);
            return;
        }

        match kind.as_str() {
            "Namespace" if group_ok(&[""]) => {
                self.count(&kind);
                let name = meta.name.clone().unwrap_or_default();
                self.remember("Namespace", None, &name, here);
                self.snapshot.add_namespace(Namespace {
                    metadata: meta,
                    spec: None,
                    status: None,
                });
            }
            "NetworkPolicy" if group_ok(&["networking.k8s.io", "extensions"]) => {
                let spec = match obj.remove("spec") {
                    None | Some(Value::Null) => None,
                    Some(v) => match typed::<NetworkPolicySpec>(v) {
                        Ok(s) => Some(s),
                        Err((field, msg)) => {
                            self.object_error(here, &label, &format!("spec.{field}"), msg);
                            return;
                        }
                    },
                };
                self.count(&kind);
                self.snapshot.add_network_policy(NetworkPolicy {
                    metadata: meta,
                    spec,
                });
            }
            "ConfigMap" if group_ok(&[""]) => {
                if !is_mesh_config_map(meta.namespace.as_deref(), meta.name.as_deref()) {
                    self.skip(kind);
                    return;
                }
                self.read_mesh_config(&label, obj, here);
            }
            "WasmPlugin" | "EnvoyFilter" | "ServiceEntry"
                if group.is_some_and(|g| g.ends_with("istio.io")) =>
            {
                self.keep_extra(&kind, meta, obj, here);
            }
            // Istio's own `Gateway` (networking.istio.io) is another kind: only the Gateway API's
            // Gateways are waypoints.
            "Gateway" if group == Some(GATEWAY_API_GROUP) => {
                self.keep_extra(&kind, meta, obj, here);
            }
            _ => {
                let what = match (&api_version, kind.as_str()) {
                    (Some(v), "Namespace" | "NetworkPolicy" | "ConfigMap") => format!("{v}/{kind}"),
                    _ => kind,
                };
                self.skip(what);
            }
        }
    }

    /// Keeps an Istio or Gateway API object as JSON for the checks that read it.
    fn keep_extra(
        &mut self,
        kind: &str,
        meta: ObjectMeta,
        mut obj: Map<String, Value>,
        here: &Here<'_>,
    ) {
        self.count(kind);
        let namespace = crate::snapshot::namespace_of(&meta);
        let name = meta.name.clone().unwrap_or_default();
        self.remember(kind, Some(&namespace), &name, here);
        let mut meta = meta;
        meta.namespace = Some(namespace);
        obj.insert(
            "metadata".into(),
            serde_json::to_value(&meta).unwrap_or(Value::Null),
        );
        self.snapshot.extra.push(Value::Object(obj));
    }

    fn read_list(&mut self, kind: &str, items: Option<Value>, here: &Here<'_>) {
        match items {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    let prefix = format!("{}items[{i}].", here.prefix);
                    let inner = Here {
                        at: here.at.clone(),
                        prefix: &prefix,
                    };
                    self.read_object(item, &inner);
                }
            }
            Some(other) => {
                let found = json_type(&other);
                self.object_error(
                    here,
                    kind,
                    "items",
                    format!("expected a list, found {found}"),
                );
            }
        }
    }

    fn metadata(
        &mut self,
        obj: &mut Map<String, Value>,
        here: &Here<'_>,
        kind: &str,
    ) -> Option<ObjectMeta> {
        match obj.remove("metadata") {
            None | Some(Value::Null) => Some(ObjectMeta::default()),
            Some(v) => match typed::<ObjectMeta>(v) {
                Ok(m) => Some(m),
                Err((field, msg)) => {
                    self.object_error(here, kind, &format!("metadata.{field}"), msg);
                    None
                }
            },
        }
    }

    fn read_mesh_config(&mut self, label: &str, mut obj: Map<String, Value>, here: &Here<'_>) {
        let data = obj.remove("data");
        let text = match data.as_ref().and_then(|d| d.get(MESH_CONFIG_KEY)) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                let found = json_type(other);
                self.object_error(
                    here,
                    label,
                    "data.mesh",
                    format!("expected a string, found {found}"),
                );
                return;
            }
            None => {
                self.object_error(
                    here,
                    label,
                    "data.mesh",
                    "the mesh ConfigMap has no `mesh` key".to_string(),
                );
                return;
            }
        };
        match MeshConfig::from_yaml(label, &text) {
            Ok(mesh) => {
                self.count("ConfigMap");
                self.remember(
                    "ConfigMap",
                    Some(crate::snapshot::MESH_CONFIG_NAMESPACE),
                    crate::snapshot::MESH_CONFIG_NAME,
                    here,
                );
                self.summary.mesh_config = true;
                self.snapshot.mesh = Some(mesh);
            }
            Err(e) => self.object_error(here, label, "data.mesh", e.to_string()),
        }
    }

    fn read_workload(
        &mut self,
        kind: WorkloadKind,
        meta: ObjectMeta,
        mut obj: Map<String, Value>,
        here: &Here<'_>,
        label: &str,
    ) {
        let namespace = crate::snapshot::namespace_of(&meta);
        let name = meta.name.clone().unwrap_or_default();
        let spec = match obj.remove("spec") {
            None | Some(Value::Null) => {
                self.object_error(here, label, "spec", format!("{kind} has no spec"));
                return;
            }
            Some(v) => v,
        };
        let workload = if kind == WorkloadKind::Pod {
            let spec = match typed::<PodSpec>(spec) {
                Ok(s) => s,
                Err((field, msg)) => {
                    self.object_error(here, label, &format!("spec.{field}"), msg);
                    return;
                }
            };
            let status = match obj.remove("status") {
                None | Some(Value::Null) => None,
                Some(v) => match typed::<PodStatus>(v) {
                    Ok(s) => Some(s),
                    Err((field, msg)) => {
                        self.object_error(here, label, &format!("status.{field}"), msg);
                        return;
                    }
                },
            };
            Workload {
                kind,
                namespace,
                name,
                meta,
                spec,
                status,
            }
        } else {
            let (template, path) = match template_of(kind, spec) {
                Ok(t) => t,
                Err((field, msg)) => {
                    self.object_error(here, label, &field, msg);
                    return;
                }
            };
            let template = match typed::<PodTemplateSpec>(template) {
                Ok(t) => t,
                Err((field, msg)) => {
                    self.object_error(here, label, &format!("{path}.{field}"), msg);
                    return;
                }
            };
            let Some(pod_spec) = template.spec else {
                self.object_error(
                    here,
                    label,
                    &format!("{path}.spec"),
                    "pod template has no spec".to_string(),
                );
                return;
            };
            Workload {
                kind,
                namespace,
                name,
                meta: template.metadata.unwrap_or_default(),
                spec: pod_spec,
                status: None,
            }
        };
        self.emit_workload(workload, here);
    }
}

/// Whether a workload's apiVersion names its kind's group (no apiVersion passes).
fn workload_group_ok(kind: WorkloadKind, api_version: Option<&str>) -> bool {
    let allowed: &[&str] = match kind {
        WorkloadKind::Pod | WorkloadKind::ReplicationController => &[""],
        WorkloadKind::Job | WorkloadKind::CronJob => &["batch"],
        _ => &["apps", "extensions"],
    };
    api_version
        .map(api_group)
        .is_none_or(|g| allowed.contains(&g))
}

/// Digs the pod template out of a controller's spec; returns it with its dotted path.
fn template_of(kind: WorkloadKind, spec: Value) -> Result<(Value, &'static str), (String, String)> {
    let take = |v: Value, key: &str, at: &str| -> Result<Value, (String, String)> {
        match v {
            Value::Object(mut m) => match m.remove(key) {
                None | Some(Value::Null) => {
                    Err((format!("{at}.{key}"), format!("{kind} has no {at}.{key}")))
                }
                Some(inner) => Ok(inner),
            },
            other => Err((
                at.to_string(),
                format!("expected a mapping, found {}", json_type(&other)),
            )),
        }
    };
    if kind == WorkloadKind::CronJob {
        let job_template = take(spec, "jobTemplate", "spec")?;
        let job_spec = take(job_template, "spec", "spec.jobTemplate")?;
        let template = take(job_spec, "template", "spec.jobTemplate.spec")?;
        Ok((template, "spec.jobTemplate.spec.template"))
    } else {
        Ok((take(spec, "template", "spec")?, "spec.template"))
    }
}

/// Deserializes a typed value, returning the failing field path and message on error.
fn typed<T: DeserializeOwned>(v: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "(root)".to_string()
        } else {
            path
        };
        (path, e.into_inner().to_string())
    })
}

/// `apps/v1` -> `apps`, `v1` -> `` (the core group).
fn api_group(api_version: &str) -> &str {
    match api_version.split_once('/') {
        Some((group, _)) => group,
        None => "",
    }
}

fn object_label(kind: &str, meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or("(unnamed)");
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

/// The line of the document's first content (after the `---` marker, blank lines and comments).
fn first_content_line(start_line: usize, doc: &str) -> usize {
    let mut lines = doc.split('\n');
    // The first piece is what follows `---` on the marker line (or the first line).
    if let Some(first) = lines.next() {
        let t = first.trim();
        if !t.is_empty() && !t.starts_with('#') {
            return start_line;
        }
    }
    for (i, line) in lines.enumerate() {
        let t = line.trim();
        if !t.is_empty() && !t.starts_with('#') {
            return start_line + i + 1;
        }
    }
    start_line
}

fn line_at(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    // Skip leading whitespace so the line is where the value starts.
    let rest = &text[offset..];
    let skipped = rest.len() - rest.trim_start().len();
    text[..offset + skipped]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// The parser's message without its own location suffix (the caller reports the location).
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_with_lines() {
        let text = "a: 1\n---\nb: 2\n--- \nc: 3\n...\n# comment\n---\nd: 4\n";
        let docs = split_yaml_documents(text);
        let lines: Vec<usize> = docs.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![1, 2, 4, 8]);
        assert_eq!(docs[0].1, "a: 1\n");
        assert!(docs[1].1.contains("b: 2"));
        assert!(docs[3].1.contains("d: 4"));
    }

    #[test]
    fn leading_marker_and_trailing_marker() {
        let docs = split_yaml_documents("---\na: 1\n---\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].0, 1);
        assert!(docs[0].1.contains("a: 1"));
        assert!(docs[1].1.trim().is_empty());
    }

    #[test]
    fn reads_list_and_counts_unknown() {
        let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: p, namespace: a}
  spec:
    containers: [{name: c, image: x}]
- apiVersion: v1
  kind: Service
  metadata: {name: s}
"#;
        let loaded = load_str("t.yaml", text).unwrap();
        assert_eq!(loaded.snapshot.workloads.len(), 1);
        assert_eq!(loaded.snapshot.workloads[0].namespace, "a");
        assert_eq!(loaded.summary.skipped_kinds.get("Service"), Some(&1));
    }

    /// Every manifest of the repository's test data and examples, read with and without the
    /// direct typed reader: the same workloads, objects, counts and errors.
    #[test]
    fn the_direct_reader_reads_what_the_general_reader_reads() {
        fn read(path: &Path, text: &str, direct: bool) -> (LoadedInput, Vec<String>, usize) {
            let mut out = LoadedInput::default();
            let mut errors = Vec::new();
            let mut workloads = Vec::new();
            let mut sink = |w: Workload| workloads.push(w);
            let mut reader = ManifestReader::new(path, &mut out, &mut errors, &mut sink);
            reader.direct = direct;
            reader.read_text(text);
            let direct_documents = reader.direct_documents;
            out.snapshot.workloads = workloads;
            let errors = errors.iter().map(|e| e.to_string()).collect();
            (out, errors, direct_documents)
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["tests/data", "../examples"] {
            collect_files(&root.join(dir), &mut files).expect("test data");
        }
        // Istio's own injector outputs too, when the shared fixtures are there.
        let fixtures = std::env::var_os("EGRESS_GUARD_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("../../shared/fixtures"));
        match std::fs::read_dir(fixtures.join("istio/inject")) {
            Ok(entries) => files.extend(entries.filter_map(|e| e.ok().map(|e| e.path()))),
            Err(_) => {
                eprintln!("shared fixtures not found: comparing on the repository's files only")
            }
        }
        let (mut workloads, mut direct) = (0, 0);
        for file in &files {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            let (fast, fast_errors, read_directly) = read(file, &text, true);
            let (general, general_errors, _) = read(file, &text, false);
            direct += read_directly;
            assert_eq!(fast_errors, general_errors, "{}", file.display());
            assert_eq!(
                fast.snapshot.workloads,
                general.snapshot.workloads,
                "{}",
                file.display()
            );
            assert_eq!(fast.summary, general.summary, "{}", file.display());
            assert_eq!(fast.origins, general.origins, "{}", file.display());
            assert_eq!(
                format!("{:?}", fast.snapshot),
                format!("{:?}", general.snapshot),
                "{}",
                file.display()
            );
            workloads += fast.snapshot.workloads.len();
        }
        eprintln!(
            "{} files, {workloads} workloads, {direct} documents read directly",
            files.len()
        );
        assert!(files.len() > 20 && workloads > 50 && direct > 40);
    }

    #[test]
    fn wrong_type_is_located() {
        let text = "kind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    securityContext:\n      runAsUser: root\n";
        let errs = load_str("bad.yaml", text).unwrap_err();
        assert_eq!(errs.len(), 1);
        let msg = errs[0].to_string();
        assert!(
            msg.starts_with(
                "bad.yaml:4: document 2: Pod p: spec.containers[0].securityContext.runAsUser:"
            ),
            "{msg}"
        );
    }

    /// A List as `kubectl get -o json` prints it, of every kind of item the reader handles.
    fn mixed_list(pods: usize, last_item: &str) -> String {
        let mut items = vec![
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "a", "labels": {"istio-injection": "enabled"}}}),
            serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "egress", "namespace": "a"},
                "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}),
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "istio", "namespace": "istio-system"},
                "data": {"mesh": "outboundTrafficPolicy:\n  mode: ALLOW_ANY\n"}}),
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "d", "namespace": "a"},
                "spec": {"template": {"metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "app", "image": "x"}]}}}}),
            // Another group: skipped and counted.
            serde_json::json!({"apiVersion": "example.com/v1", "kind": "Pod",
                "metadata": {"name": "other", "namespace": "a"}}),
            // spec before kind: the general reader's.
            serde_json::json!({"spec": {"hostNetwork": true, "containers": [{"name": "c"}]},
                "kind": "Pod", "apiVersion": "v1", "metadata": {"name": "late-kind", "namespace": "a"}}),
        ];
        for i in 0..pods {
            items.push(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p-{i}"), "namespace": "a",
                    "annotations": {"note": "a \"quoted\" } ] { [ \\ value"}},
                "spec": {"containers": [{"name": "app", "image": "x",
                    "securityContext": {"runAsUser": if i % 7 == 0 { 1337 } else { 1000 }}}]},
                "status": {"phase": "Running"}}));
        }
        // The same namespace again: the later one is kept.
        items.push(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "a", "labels": {"istio-injection": "disabled"}}}));
        let mut text = serde_json::to_string_pretty(&serde_json::json!({
            "apiVersion": "v1", "items": items, "kind": "List",
            "metadata": {"resourceVersion": ""}}))
        .expect("JSON");
        if !last_item.is_empty() {
            let end = text.rfind(']').expect("the items end");
            text.insert_str(end, &format!(",\n{last_item}\n"));
        }
        format!("\n{text}\n")
    }

    type Read = (Result<String, Vec<String>>, Vec<Vec<Workload>>);

    /// Reads `file` streamed in blocks of `block` bytes (`None` when it falls back), or whole.
    fn read_both_ways(file: &Path, block: usize) -> (Option<Read>, Read) {
        let how = Streaming {
            min_bytes: 0,
            block,
            threads: 3,
        };
        let push = |v: &mut Vec<Workload>, w| v.push(w);
        let streamed = read_large_list(file, &how, &Vec::new, &push).map(|parts| {
            let mut errors = Vec::new();
            let (loaded, states) = merge_outcomes(parts.into_iter(), &mut errors);
            assert!(states.len() > 2, "read in several parts");
            summarise(loaded, errors, states)
        });
        let (out, errors, workloads) = read_whole(file, &Vec::new, &push);
        (streamed, summarise(out, errors, vec![workloads]))
    }

    fn summarise(loaded: LoadedInput, errors: Vec<InputError>, states: Vec<Vec<Workload>>) -> Read {
        let all: Vec<Workload> = states.into_iter().flatten().collect();
        let result = if errors.is_empty() {
            Ok(format!("{loaded:?}"))
        } else {
            Err(errors.iter().map(|e| e.to_string()).collect())
        };
        (result, vec![all])
    }

    #[test]
    fn a_streamed_list_reads_as_the_whole_file_reads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("pods.json");
        std::fs::write(&file, mixed_list(300, "")).expect("written");
        let (streamed, whole) = read_both_ways(&file, 4096);
        let streamed = streamed.expect("streamed");
        assert_eq!(streamed, whole);
        let (Ok(loaded), workloads) = &whole else {
            panic!("no errors: {whole:?}")
        };
        assert_eq!(
            workloads[0].len(),
            302,
            "300 pods, the Deployment, the late-kind Pod"
        );
        assert!(
            loaded.contains("\"istio-injection\": \"disabled\""),
            "the later namespace"
        );
        assert!(loaded.contains("skipped: 1"), "{loaded}");
        assert!(loaded.contains("line: 2"), "the List's line: {loaded}");
    }

    #[test]
    fn a_streamed_list_gives_the_errors_reading_it_whole_gives() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Valid JSON of the wrong type: the streamed read gives the error itself.
        let file = dir.path().join("wrong-type.json");
        let wrong = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", "namespace": "a"}, "spec": {"containers": "x"}}"#;
        std::fs::write(&file, mixed_list(50, wrong)).expect("written");
        let (streamed, whole) = read_both_ways(&file, 1024);
        assert_eq!(streamed.as_ref(), Some(&whole));
        let Err(errors) = &whole.0 else {
            panic!("an error: {whole:?}")
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .contains(":2: document 1: Pod a/bad: items[57].spec.containers: invalid type"),
            "{errors:?}"
        );
        // Not JSON: only reading it whole can say where, so the stream gives way.
        for (name, bad) in [
            ("bad-item.json", r#"{"kind": "Pod", "spec": }"#),
            ("not-utf8.json", "\"\u{0}\""),
        ] {
            let file = dir.path().join(name);
            let mut bytes = mixed_list(50, bad).into_bytes();
            if name == "not-utf8.json" {
                let at = bytes.iter().rposition(|b| *b == 0).expect("the marker");
                bytes[at] = 0xFF;
            }
            std::fs::write(&file, bytes).expect("written");
            let (streamed, _) = read_both_ways(&file, 1024);
            assert!(streamed.is_none(), "{name}: read whole instead");
        }
        // Not a List at all.
        let file = dir.path().join("pod.json");
        std::fs::write(&file, r#"{"kind": "Pod", "spec": {"containers": []}}"#).expect("written");
        assert!(read_both_ways(&file, 1024).0.is_none());
    }
}
