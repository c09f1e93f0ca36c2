//! The filter image: written by `egress-wasm-image`, pushed to a real registry with skopeo,
//! pulled back byte-identical, and pinned by digest in istio/.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use egress_manifests::{oci, pins};

use common::{built_filter_wasm, istio_dir, require_tool, run, run_ok};

const REFRESH: &str = "cargo run -p egress-manifests --bin egress-wasm-image -- \
--wasm target/wasm32-wasip1/release/egress_filter.wasm --out target/egress-filter-oci --update-manifests istio";

fn built_image() -> (Vec<u8>, oci::WasmImage) {
    let wasm = built_filter_wasm();
    let module = std::fs::read(&wasm).unwrap();
    let image = oci::build_image(&module, &wasm.display().to_string(), "0.1.0").unwrap();
    (module, image)
}

/// The digest every WasmPlugin and EnvoyFilter pins is the one the filter built from this tree
/// packs to. When the filter changes, this fails until the pins are refreshed.
#[test]
fn istio_pins_match_the_filter_built_from_this_tree() {
    let (_, image) = built_image();
    let found = pins::find_pins(&istio_dir()).unwrap();
    let kinds: Vec<&str> = found.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(
        kinds,
        // alternatives/, ambient/ (three), then the egress gateway's two.
        [
            "EnvoyFilter",
            "WasmPlugin",
            "WasmPlugin",
            "WasmPlugin",
            "WasmPlugin",
            "WasmPlugin"
        ],
        "{found:?}"
    );
    let stale: Vec<String> = found
        .iter()
        .filter(|pin| pin.sha256 != image.wasmplugin_sha256())
        .map(|pin| format!("{} pins {}", pin.describe(), pin.sha256))
        .collect();
    assert!(
        stale.is_empty(),
        "the filter built from this tree packs to {}, but:\n{}\nrefresh with:\n  {REFRESH}",
        image.wasmplugin_sha256(),
        stale.join("\n")
    );
}

fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path.strip_prefix(dir).unwrap().to_path_buf(), bytes));
            }
        }
    }
    out.sort();
    out
}

fn packager() -> Command {
    Command::new(env!("CARGO_BIN_EXE_egress-wasm-image"))
}

/// Same module in, same bytes out; and the printed digest is the manifest blob's digest.
#[test]
fn packager_output_is_deterministic_and_prints_the_pin() {
    let wasm = built_filter_wasm();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = run_ok(
        packager()
            .arg("--wasm")
            .arg(&wasm)
            .arg("--out")
            .arg(a.path()),
    );
    let second = run_ok(
        packager()
            .arg("--wasm")
            .arg(&wasm)
            .arg("--out")
            .arg(b.path())
            .arg("--tag")
            .arg("0.1.0"),
    );
    assert_eq!(
        files_under(a.path()),
        files_under(b.path()),
        "two runs wrote different layouts"
    );
    assert_eq!(
        first.replace(&a.path().display().to_string(), "DIR"),
        second.replace(&b.path().display().to_string(), "DIR")
    );
    let field = |name: &str| {
        first
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {first}"))
            .to_string()
    };
    let layout = oci::read_layout(a.path(), Some("0.1.0")).unwrap();
    assert_eq!(field("manifest-digest"), layout.manifest_digest);
    assert_eq!(
        format!("sha256:{}", field("wasmplugin-sha256")),
        layout.manifest_digest
    );
    assert_eq!(
        field("module-digest"),
        oci::digest_of(&std::fs::read(&wasm).unwrap())
    );
    assert_eq!(layout.module, std::fs::read(&wasm).unwrap());
    let blobs = files_under(a.path()).len();
    assert_eq!(blobs, 5, "oci-layout, index.json, manifest, config, layer");
}

/// --check-manifests fails on a stale pin and names the fix; --update-manifests fixes it.
#[test]
fn packager_checks_and_refreshes_pins() {
    let wasm = built_filter_wasm();
    let out = tempfile::tempdir().unwrap();
    let manifests = tempfile::tempdir().unwrap();
    let stale = "ab".repeat(32);
    let plugin = std::fs::read_to_string(istio_dir().join("wasmplugin-http.yaml")).unwrap();
    let pinned = pins::find_pins(&istio_dir()).unwrap()[1].sha256.clone();
    std::fs::write(
        manifests.path().join("plugin.yaml"),
        plugin.replace(&pinned, &stale),
    )
    .unwrap();

    let check = || {
        packager()
            .arg("--wasm")
            .arg(&wasm)
            .arg("--out")
            .arg(out.path())
            .arg("--check-manifests")
            .arg(manifests.path())
            .output()
            .unwrap()
    };
    let failed = check();
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains(&stale) && stderr.contains("--update-manifests"),
        "{stderr}"
    );

    run_ok(
        packager()
            .arg("--wasm")
            .arg(&wasm)
            .arg("--out")
            .arg(out.path())
            .arg("--update-manifests")
            .arg(manifests.path()),
    );
    assert_eq!(check().status.code(), Some(0));
    let refreshed = std::fs::read_to_string(manifests.path().join("plugin.yaml")).unwrap();
    let (_, image) = built_image();
    assert_eq!(
        refreshed,
        plugin.replace(&pinned, image.wasmplugin_sha256()),
        "only the digest changed"
    );
}

/// A `docker-registry` on loopback, stopped when dropped.
struct Registry {
    child: Child,
    port: u16,
    _storage: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /v2/` answers 200 once the registry serves the API.
fn registry_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

fn start_registry(binary: &Path) -> Registry {
    for _attempt in 0..3 {
        let storage = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut registry = Registry {
            child,
            port,
            _storage: storage,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if registry_answers(port) {
                return registry;
            }
            if let Ok(Some(_)) = registry.child.try_wait() {
                break; // the port was taken in between: try another
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(registry);
    }
    panic!("docker-registry did not come up on loopback");
}

fn skopeo(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    // The test's own registry: no signature policy to consult.
    command.arg("--insecure-policy");
    command
}

#[test]
fn image_survives_a_real_registry_round_trip() {
    let Some(skopeo_bin) = require_tool("skopeo") else {
        return;
    };
    let Some(registry_bin) = require_tool("docker-registry") else {
        return;
    };
    let (module, image) = built_image();
    let layout = tempfile::tempdir().unwrap();
    oci::write_layout(layout.path(), &image).unwrap();

    let registry = start_registry(&registry_bin);
    let reference = format!(
        "docker://127.0.0.1:{}/egress-guard/egress-filter:{}",
        registry.port, image.tag
    );
    run_ok(
        skopeo(&skopeo_bin)
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{}", layout.path().display(), image.tag))
            .arg(&reference),
    );

    // What Istio computes for oci:// URLs: the digest of the manifest the registry serves.
    let served = run(skopeo(&skopeo_bin)
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(&reference));
    assert!(
        served.status.success(),
        "{}",
        String::from_utf8_lossy(&served.stderr)
    );
    assert_eq!(
        oci::digest_of(&served.stdout),
        image.manifest_digest,
        "the registry changed the manifest"
    );

    let pulled = tempfile::tempdir().unwrap();
    run_ok(
        skopeo(&skopeo_bin)
            .args(["copy", "--src-tls-verify=false"])
            .arg(&reference)
            .arg(format!("oci:{}:pulled", pulled.path().display())),
    );
    let back = oci::read_layout(pulled.path(), Some("pulled")).unwrap();
    assert!(
        back.module == module,
        "the pulled plugin.wasm differs from the built .wasm"
    );
    assert_eq!(back.manifest_digest, image.manifest_digest);

    let pinned = pins::find_pins(&istio_dir()).unwrap();
    let http_plugin = pinned
        .iter()
        .find(|p| p.path == istio_dir().join("wasmplugin-http.yaml"))
        .expect("wasmplugin-http.yaml pins the image");
    assert_eq!(
        format!("sha256:{}", http_plugin.sha256),
        back.manifest_digest,
        "istio/wasmplugin-http.yaml pins another image; refresh with:\n  {REFRESH}"
    );
}
