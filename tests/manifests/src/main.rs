//! `egress-wasm-image`: writes the filter's `.wasm` as an Istio Wasm OCI image into an OCI image
//! layout (push it with `skopeo copy oci:DIR:TAG docker://REGISTRY/egress-filter:TAG`), prints the
//! digest a WasmPlugin pins, and optionally rewrites the pins in `istio/`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use egress_manifests::{oci, pins};

#[derive(Parser)]
#[command(name = "egress-wasm-image", version, about)]
struct Cli {
    /// The filter module, e.g. target/wasm32-wasip1/release/egress_filter.wasm.
    #[arg(long)]
    wasm: PathBuf,
    /// Directory of the OCI image layout to write (created if missing; other tags are kept).
    #[arg(long)]
    out: PathBuf,
    /// Tag of the image inside the layout.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    tag: String,
    /// Rewrite the `sha256` of every WasmPlugin/EnvoyFilter under this directory that pulls the
    /// egress-filter image, so it pins this image.
    #[arg(long, value_name = "DIR", conflicts_with = "check_manifests")]
    update_manifests: Option<PathBuf>,
    /// Exit 1 when a WasmPlugin/EnvoyFilter under this directory pins another digest.
    #[arg(long, value_name = "DIR")]
    check_manifests: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("egress-wasm-image: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let module =
        std::fs::read(&cli.wasm).with_context(|| format!("reading {}", cli.wasm.display()))?;
    let image = oci::build_image(&module, &cli.wasm.display().to_string(), &cli.tag)?;
    oci::write_layout(&cli.out, &image)?;
    println!("layout: {}", cli.out.display());
    println!("tag: {}", image.tag);
    println!("manifest-digest: {}", image.manifest_digest);
    println!("module-digest: {}", image.module_digest);
    println!("wasmplugin-sha256: {}", image.wasmplugin_sha256());

    if let Some(dir) = &cli.update_manifests {
        let changed = pins::update_pins(dir, image.wasmplugin_sha256())?;
        for path in &changed {
            println!("updated: {}", path.display());
        }
        if changed.is_empty() {
            println!("manifests already pin this image");
        }
    }
    if let Some(dir) = &cli.check_manifests {
        let found = pins::find_pins(dir)?;
        if found.is_empty() {
            anyhow::bail!(
                "no WasmPlugin or EnvoyFilter under {} pulls the egress-filter image",
                dir.display()
            );
        }
        let stale: Vec<_> = found
            .iter()
            .filter(|pin| pin.sha256 != image.wasmplugin_sha256())
            .collect();
        for pin in &stale {
            eprintln!(
                "stale: {} pins {:?}, the module packs to {}",
                pin.describe(),
                pin.sha256,
                image.wasmplugin_sha256()
            );
        }
        if !stale.is_empty() {
            eprintln!(
                "refresh with: egress-wasm-image --wasm {} --out {} --tag {} --update-manifests {}",
                cli.wasm.display(),
                cli.out.display(),
                image.tag,
                dir.display()
            );
            return Ok(ExitCode::from(1));
        }
        println!("manifests pin this image: {} place(s)", found.len());
    }
    Ok(ExitCode::SUCCESS)
}
