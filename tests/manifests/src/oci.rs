//! The filter as an OCI image in the Wasm image format Istio pulls.
//!
//! Istio's image fetcher (`pkg/wasm/imagefetcher.go`) accepts three layouts. We write the *compat*
//! variant with standard OCI media types: an image manifest with one
//! `application/vnd.oci.image.layer.v1.tar+gzip` layer holding `plugin.wasm`, and a standard image
//! config. Every registry, `skopeo`, `crane` and `docker` handle it, unlike the two-layer *oci*
//! variant with custom artifact media types.
//!
//! The output is a pure function of the module bytes and the tag: tar headers carry no time, owner
//! or mode from the build machine, gzip carries no time or name, JSON is written from structs in a
//! fixed field order. Same input, same digests, on any machine.
//!
//! For an `oci://` URL Istio compares the WasmPlugin `sha256` with the digest of the image
//! *manifest* (`img.Digest()`), not with the module bytes; for `http(s)://` URLs it is the
//! module's own sha256. [`WasmImage`] carries both.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The file name Istio looks for inside the layer (compat variant).
pub const MODULE_FILE_NAME: &str = "plugin.wasm";
/// Annotation that names a manifest's tag inside an OCI layout (what `skopeo oci:DIR:TAG` reads).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

const WASM_MAGIC: [u8; 4] = [0x00, 0x61, 0x73, 0x6d];

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a WebAssembly module (it does not start with \\0asm)")]
    NotWasm(String),
    #[error("tag {0:?} is not a valid OCI tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})")]
    BadTag(String),
    #[error("{path}: {message}")]
    BadLayout { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OciError + '_ {
    move |source| OciError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn bad_layout(path: &Path, message: impl Into<String>) -> OciError {
    OciError::BadLayout {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

impl Descriptor {
    fn of(media_type: &str, bytes: &[u8]) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest: digest_of(bytes),
            size: bytes.len() as u64,
            annotations: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'a str,
    os: &'a str,
    rootfs: RootFs,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

/// One Wasm image: its blobs and the digests that go into manifests.
#[derive(Debug, Clone)]
pub struct WasmImage {
    pub tag: String,
    /// `sha256:<hex>` of the image manifest: what Istio checks for `oci://` URLs.
    pub manifest_digest: String,
    /// `sha256:<hex>` of the `.wasm` bytes: what Istio checks for `http(s)://` URLs.
    pub module_digest: String,
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
}

impl WasmImage {
    /// The 64 hex digits that go into a WasmPlugin `spec.sha256` for an `oci://` URL.
    pub fn wasmplugin_sha256(&self) -> &str {
        strip_algorithm(&self.manifest_digest)
    }
}

pub fn strip_algorithm(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Tag grammar of the OCI distribution spec.
pub fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphanumeric() || *first == b'_')
                && rest.len() <= 127
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        }
        None => false,
    }
}

/// Builds the image for a module. `source` names the module in errors.
pub fn build_image(module: &[u8], source: &str, tag: &str) -> Result<WasmImage, OciError> {
    if module.len() < 8 || module[..4] != WASM_MAGIC {
        return Err(OciError::NotWasm(source.to_string()));
    }
    if !is_valid_tag(tag) {
        return Err(OciError::BadTag(tag.to_string()));
    }
    let tar_bytes = layer_tar(module).map_err(io_err(Path::new(source)))?;
    let layer = gzip(&tar_bytes).map_err(io_err(Path::new(source)))?;
    let config = serde_json::to_vec(&ImageConfig {
        architecture: "wasm",
        os: "wasip1",
        rootfs: RootFs {
            kind: "layers",
            // The diff id is the digest of the *uncompressed* layer.
            diff_ids: vec![digest_of(&tar_bytes)],
        },
    })
    .expect("serialising a struct of strings cannot fail"); // ok-panic
    let manifest = serde_json::to_vec(&ImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_string()),
        config: Descriptor::of(CONFIG_MEDIA_TYPE, &config),
        layers: vec![Descriptor::of(LAYER_MEDIA_TYPE, &layer)],
    })
    .expect("serialising a struct of strings cannot fail"); // ok-panic
    Ok(WasmImage {
        tag: tag.to_string(),
        manifest_digest: digest_of(&manifest),
        module_digest: digest_of(module),
        manifest,
        config,
        layer,
    })
}

/// A tar archive with the single entry `plugin.wasm`, with no trace of the build machine.
fn layer_tar(module: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut header = tar::Header::new_ustar();
    header.set_path(MODULE_FILE_NAME)?;
    header.set_size(module.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, module)?;
    builder.into_inner()
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    // No file name, mtime 0, fixed OS byte: the header is the same everywhere.
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// Writes the image into an OCI image layout at `dir` (created if missing). Other tags already in
/// the layout are kept; the same tag is replaced.
pub fn write_layout(dir: &Path, image: &WasmImage) -> Result<(), OciError> {
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
    for blob in [&image.layer, &image.config, &image.manifest] {
        let path = blobs.join(strip_algorithm(&digest_of(blob)));
        fs::write(&path, blob).map_err(io_err(&path))?;
    }
    let layout_file = dir.join("oci-layout");
    fs::write(&layout_file, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err(&layout_file))?;

    let index_path = dir.join("index.json");
    let mut manifests = match fs::read(&index_path) {
        Ok(bytes) => {
            let index: ImageIndex = serde_json::from_slice(&bytes)
                .map_err(|e| bad_layout(&index_path, format!("not an OCI image index: {e}")))?;
            index.manifests
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(&index_path)(e)),
    };
    manifests.retain(|d| ref_name(d) != Some(image.tag.as_str()));
    let mut descriptor = Descriptor::of(MANIFEST_MEDIA_TYPE, &image.manifest);
    descriptor.annotations = Some(
        [(REF_NAME_ANNOTATION.to_string(), image.tag.clone())]
            .into_iter()
            .collect(),
    );
    manifests.push(descriptor);
    manifests.sort_by(|a, b| ref_name(a).cmp(&ref_name(b)));
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(INDEX_MEDIA_TYPE.to_string()),
        manifests,
    };
    let bytes = serde_json::to_vec(&index).expect("serialising an index cannot fail"); // ok-panic
    fs::write(&index_path, bytes).map_err(io_err(&index_path))
}

fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations
        .as_ref()
        .and_then(|a| a.get(REF_NAME_ANNOTATION))
        .map(String::as_str)
}

/// What [`read_layout`] found for one tag.
#[derive(Debug)]
pub struct LayoutImage {
    pub manifest_digest: String,
    pub manifest: ImageManifest,
    pub module: Vec<u8>,
}

/// Reads the image tagged `tag` (or the only image when `tag` is `None`) from an OCI layout and
/// extracts the module the way Istio does, checking every digest on the way.
pub fn read_layout(dir: &Path, tag: Option<&str>) -> Result<LayoutImage, OciError> {
    let index_path = dir.join("index.json");
    let index: ImageIndex = serde_json::from_slice(&read_file(&index_path)?)
        .map_err(|e| bad_layout(&index_path, format!("not an OCI image index: {e}")))?;
    let descriptor = match tag {
        Some(tag) => index
            .manifests
            .iter()
            .find(|d| ref_name(d) == Some(tag))
            .ok_or_else(|| bad_layout(&index_path, format!("no manifest tagged {tag:?}")))?,
        None => match index.manifests.as_slice() {
            [only] => only,
            other => {
                return Err(bad_layout(
                    &index_path,
                    format!("expected one manifest, found {}", other.len()),
                ))
            }
        },
    };
    let manifest_bytes = read_blob(dir, descriptor)?;
    let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
        bad_layout(
            &blob_path(dir, &descriptor.digest),
            format!("not an image manifest: {e}"),
        )
    })?;
    let layer = match manifest.layers.as_slice() {
        [layer] if layer.media_type == LAYER_MEDIA_TYPE => layer,
        _ => {
            return Err(bad_layout(
                &blob_path(dir, &descriptor.digest),
                format!("expected exactly one {LAYER_MEDIA_TYPE} layer"),
            ))
        }
    };
    read_blob(dir, &manifest.config)?;
    let layer_path = blob_path(dir, &layer.digest);
    let layer_bytes = read_blob(dir, layer)?;
    let module = extract_module(&layer_bytes).map_err(|e| bad_layout(&layer_path, e))?;
    Ok(LayoutImage {
        manifest_digest: descriptor.digest.clone(),
        manifest,
        module,
    })
}

/// `plugin.wasm` out of a gzipped tar layer.
pub fn extract_module(layer: &[u8]) -> Result<Vec<u8>, String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar.gz: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("broken tar entry: {e}"))?;
        let path = entry.path().map_err(|e| format!("bad entry path: {e}"))?;
        if path.file_name().and_then(|n| n.to_str()) == Some(MODULE_FILE_NAME) {
            let mut module = Vec::new();
            entry
                .read_to_end(&mut module)
                .map_err(|e| format!("reading {MODULE_FILE_NAME}: {e}"))?;
            return Ok(module);
        }
    }
    Err(format!("{MODULE_FILE_NAME} not found in the layer"))
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs")
        .join("sha256")
        .join(strip_algorithm(digest))
}

fn read_file(path: &Path) -> Result<Vec<u8>, OciError> {
    fs::read(path).map_err(io_err(path))
}

fn read_blob(dir: &Path, descriptor: &Descriptor) -> Result<Vec<u8>, OciError> {
    let path = blob_path(dir, &descriptor.digest);
    let bytes = read_file(&path)?;
    if digest_of(&bytes) != descriptor.digest || bytes.len() as u64 != descriptor.size {
        return Err(bad_layout(
            &path,
            format!(
                "content does not match its descriptor ({} bytes, {})",
                bytes.len(),
                digest_of(&bytes)
            ),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &[u8] = b"\0asm\x01\0\0\0 a tiny module body";

    #[test]
    fn same_module_same_digests() {
        let a = build_image(MODULE, "m.wasm", "1.0").unwrap();
        let b = build_image(MODULE, "m.wasm", "1.0").unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(a.layer, b.layer);
        let c = build_image(b"\0asm\x01\0\0\0 another body", "m.wasm", "1.0").unwrap();
        assert_ne!(a.manifest_digest, c.manifest_digest);
        assert_eq!(a.module_digest, digest_of(MODULE));
    }

    #[test]
    fn layer_holds_the_module_as_plugin_wasm() {
        let image = build_image(MODULE, "m.wasm", "v1").unwrap();
        assert_eq!(extract_module(&image.layer).unwrap(), MODULE);
        let manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(manifest["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(manifest["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn rejects_non_wasm_and_bad_tags() {
        assert!(matches!(
            build_image(b"not wasm at all", "x", "v1"),
            Err(OciError::NotWasm(_))
        ));
        for tag in ["", ".v1", "a/b", "with space", &"x".repeat(129)] {
            assert!(
                matches!(build_image(MODULE, "x", tag), Err(OciError::BadTag(_))),
                "{tag:?}"
            );
        }
        assert!(is_valid_tag("0.1.0") && is_valid_tag("_x-Y.z") && is_valid_tag(&"x".repeat(128)));
    }

    #[test]
    fn layout_round_trip_keeps_other_tags() {
        let dir = tempfile::tempdir().unwrap();
        let one = build_image(MODULE, "m", "one").unwrap();
        let two = build_image(b"\0asm\x01\0\0\0 two", "m", "two").unwrap();
        write_layout(dir.path(), &one).unwrap();
        write_layout(dir.path(), &two).unwrap();
        write_layout(dir.path(), &one).unwrap();
        let read_one = read_layout(dir.path(), Some("one")).unwrap();
        assert_eq!(read_one.module, MODULE);
        assert_eq!(read_one.manifest_digest, one.manifest_digest);
        assert_eq!(
            read_layout(dir.path(), Some("two")).unwrap().module,
            b"\0asm\x01\0\0\0 two"
        );
        assert!(
            read_layout(dir.path(), None).is_err(),
            "two tags: ambiguous"
        );
    }

    #[test]
    fn corrupted_blob_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let image = build_image(MODULE, "m", "v1").unwrap();
        write_layout(dir.path(), &image).unwrap();
        let layer = blob_path(dir.path(), &digest_of(&image.layer));
        fs::write(&layer, b"tampered").unwrap();
        let err = read_layout(dir.path(), Some("v1")).unwrap_err().to_string();
        assert!(err.contains("does not match its descriptor"), "{err}");
    }
}
