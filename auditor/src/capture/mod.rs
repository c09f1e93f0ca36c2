//! What Istio's injection implies for a pod's traffic capture: the one capture model.
//!
//! A sidecar only sees the traffic the pod's netfilter rules send to it. Those rules are written
//! either by the `istio-init` container (`istio-iptables` args, environment as fallback) or, with
//! istio-cni, by the CNI plugin from the pod's `traffic.sidecar.istio.io/*` annotations and the
//! proxy container's `runAsUser`/`runAsGroup`. [`CaptureConfig::from_pod`] reads whichever of the
//! two applies and returns the settings the rules are built from: the pod checks use it to find
//! narrowed capture and excluded identities, and the iptables/nftables judge uses it to know which
//! rules to expect in the pod's network namespace.
//!
//! `model.rs` holds the settings themselves (re-exported here), `annotations.rs` reads them the
//! way istio-cni and the injection template do, `iptables_flags.rs` the way `istio-iptables`
//! parses its flags and environment.
//!
//! Sources: `tools/istio-iptables/pkg/cmd/root.go` and `pkg/constants` (flags and their
//! environment variables), `cni/pkg/plugin/sidecar_redirect.go` and `kubernetes.go` (CNI defaults),
//! `tools/istio-iptables/pkg/capture/run.go` (how each setting becomes a rule).

mod annotations;
mod iptables_flags;
mod model;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use model::*;

use crate::istio::{self, ProxyRole};
use annotations::{from_annotations, from_cni_annotations};
use iptables_flags::parse_init_container;

impl CaptureConfig {
    /// Derives what Istio's injection implies for this pod. `Ok(None)` when the pod was not
    /// injected: no `sidecar.istio.io/status` annotation, or no `istio-proxy` container running
    /// Istio's `proxy sidecar|router` args.
    pub fn from_pod(
        spec: &PodSpec,
        meta: &ObjectMeta,
    ) -> Result<Option<CaptureConfig>, CaptureError> {
        let Some(status) = istio::injection_status(meta) else {
            return Ok(None);
        };
        let Some(proxy) = istio::find_proxy(spec) else {
            return Ok(None);
        };
        let Some(role) = proxy.role else {
            return Ok(None);
        };
        let mode_annotation = istio::annotation(meta, istio::INTERCEPTION_MODE_ANNOTATION);

        if role == ProxyRole::Gateway {
            let mut cfg = CaptureConfig::defaults(CaptureSource::Gateway, false, role);
            cfg.interception_mode = InterceptionMode::None;
            cfg.rules_applied = false;
            cfg.proxy_uids = vec![proxy_run_as_user(spec, proxy.container)];
            cfg.proxy_gids = cfg.proxy_uids.clone();
            return Ok(Some(cfg));
        }

        if let Some(init) = istio::find_init_container(spec, istio::INIT_CONTAINER) {
            return parse_init_container(init).map(Some);
        }

        if istio::uses_cni(spec, meta) {
            let mut cfg = from_cni_annotations(meta, proxy.container)?;
            if let Some(validation) = istio::find_init_container(spec, istio::VALIDATION_CONTAINER)
            {
                cfg.run_validation = validation_runs(validation);
            }
            return Ok(Some(cfg));
        }

        if mode_annotation == Some("NONE") {
            let mut cfg = CaptureConfig::defaults(CaptureSource::InterceptionDisabled, false, role);
            cfg.interception_mode = InterceptionMode::None;
            cfg.rules_applied = false;
            cfg.proxy_uids = vec![proxy_run_as_user(spec, proxy.container)];
            cfg.proxy_gids = cfg.proxy_uids.clone();
            return Ok(Some(cfg));
        }

        if status.lists(istio::INIT_CONTAINER) {
            // Istio injected istio-init and it is gone: whatever programs capture now, it is not Istio.
            return Err(CaptureError::MissingInitContainer {
                container: istio::INIT_CONTAINER.to_string(),
            });
        }
        // Injected with neither init container nor a NONE mode: an older CNI install that adds no
        // validation container. The CNI plugin reads the annotations.
        from_cni_annotations(meta, proxy.container).map(Some)
    }

    /// What Istio's injection will write for a pod that is not injected yet (no
    /// `sidecar.istio.io/status`), assuming the default install (istio-init, no CNI):
    /// the `traffic.sidecar.istio.io/*` and interception-mode annotations over the template's
    /// defaults, an `istio-init` container the pod brings itself parsed as the args the injector
    /// will keep, and the proxy UID from an `istio-proxy` container the pod brings (the template
    /// writes `-u` from it; `-g` then defaults to the same).
    pub fn predict(spec: &PodSpec, meta: &ObjectMeta) -> Result<CaptureConfig, CaptureError> {
        let own_init = istio::find_init_container(spec, istio::INIT_CONTAINER)
            .filter(|c| c.args.as_ref().is_some_and(|a| !a.is_empty()) || c.command.is_some());
        let mut cfg = match own_init {
            Some(init) => parse_init_container(init)?,
            None => from_annotations(
                meta,
                CaptureSource::Predicted {
                    init_container: None,
                },
                false,
            )?,
        };
        cfg.source = CaptureSource::Predicted {
            init_container: own_init.map(|c| c.name.clone()),
        };
        if own_init.is_none() {
            let own_proxy_uid = spec
                .containers
                .iter()
                .chain(istio::init_containers(spec))
                .find(|c| c.name == istio::PROXY_CONTAINER)
                .and_then(|c| c.security_context.as_ref())
                .and_then(|s| s.run_as_user);
            let uid = own_proxy_uid.unwrap_or(DEFAULT_PROXY_UID);
            cfg.proxy_uids = vec![uid];
            cfg.proxy_gids = vec![uid];
        }
        if cfg.interception_mode == InterceptionMode::None {
            cfg.rules_applied = false;
        }
        Ok(cfg)
    }
}

/// The proxy's UID as the proxy-uid check should assume it when capture settings cannot be read:
/// the proxy container's `runAsUser`, else the pod's, else 1337.
pub fn fallback_proxy_identity(spec: &PodSpec) -> (i64, i64) {
    let Some(proxy) = istio::find_proxy(spec) else {
        return (DEFAULT_PROXY_UID, DEFAULT_PROXY_UID);
    };
    let uid = proxy_run_as_user(spec, proxy.container);
    let gid = proxy
        .container
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_group)
        .or_else(|| spec.security_context.as_ref().and_then(|s| s.run_as_group))
        .unwrap_or(uid);
    (uid, gid)
}

fn proxy_run_as_user(spec: &PodSpec, proxy: &Container) -> i64 {
    proxy
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_user)
        .or_else(|| spec.security_context.as_ref().and_then(|s| s.run_as_user))
        .unwrap_or(DEFAULT_PROXY_UID)
}

fn validation_runs(container: &Container) -> bool {
    container
        .args
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .any(|a| a == "--run-validation" || a == "--run-validation=true")
}
