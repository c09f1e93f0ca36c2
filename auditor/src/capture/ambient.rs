//! Ambient mode's capture: what istio-cni's in-pod rules do with a pod's outbound traffic once it
//! has enrolled the pod (`cni/pkg/iptables/iptables.go` `AppendInpodRules`, the nftables
//! equivalent in `cni/pkg/nftables`).
//!
//! There is no proxy inside the pod: ztunnel runs in its own pod and opens its listeners (15001
//! outbound, 15006/15008 inbound, 15053 DNS) and its outgoing sockets inside the pod's network
//! namespace. Its sockets carry the mark 0x539 and the rules exempt that mark, not a UID, so
//! nothing of the sidecar settings applies: no proxy UID/GID, no `traffic.sidecar.istio.io/*`
//! exclusion (istio-cni reads only the `ambient.istio.io/*` overrides, `getPodLevelTrafficOverrides`
//! in `cni/pkg/nodeagent/net.go`).

use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::model::parse_go_bool;
use crate::istio::{self, ambient};

/// What istio-cni says about the pod (`ambient.istio.io/redirection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Redirection {
    /// Rules written and ztunnel serves the pod.
    Enabled,
    /// Rules written, no ztunnel has taken the pod yet: it can send no captured traffic.
    Pending,
}

impl Redirection {
    /// The annotation's value; anything but Istio's two values means "not captured".
    pub fn parse(value: &str) -> Option<Redirection> {
        match value {
            ambient::REDIRECTION_ENABLED => Some(Redirection::Enabled),
            ambient::REDIRECTION_PENDING => Some(Redirection::Pending),
            _ => None,
        }
    }

    pub fn of(meta: &ObjectMeta) -> Option<Redirection> {
        istio::annotation(meta, ambient::REDIRECTION_ANNOTATION).and_then(Redirection::parse)
    }
}

/// What the install sets for every ambient pod and a node cannot read from the pod itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmbientSettings {
    /// The install's DNS capture (`values.cni.ambient.dnsCapture`; on by default from Istio 1.25,
    /// off in the 1.24 compatibility profile). A pod's `ambient.istio.io/dns-capture` overrides it.
    pub dns_capture: bool,
    /// The addresses kubelet probes are SNATed to on the node, which the pod's rules let through.
    pub host_probe_snat_ips: Vec<IpAddr>,
}

impl Default for AmbientSettings {
    fn default() -> Self {
        let ips = [
            ambient::DEFAULT_HOST_PROBE_SNAT_IP,
            ambient::DEFAULT_HOST_PROBE_SNAT_IPV6,
        ];
        AmbientSettings {
            dns_capture: true,
            host_probe_snat_ips: ips.iter().filter_map(|s| s.parse().ok()).collect(),
        }
    }
}

/// Where the DNS capture setting of a pod came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "from")]
pub enum DnsCaptureSource {
    /// `ambient.istio.io/dns-capture` on the pod.
    PodAnnotation,
    /// The install's setting (the pod has no annotation).
    Install,
    /// The pod's annotation is not a boolean: DNS capture is not required of the rules.
    UnreadableAnnotation { value: String },
}

/// The capture an ambient pod's rules must give its outbound traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AmbientCapture {
    pub redirection: Redirection,
    /// DNS (port 53, UDP and TCP) must reach ztunnel's DNS proxy (15053).
    pub dns_capture: bool,
    pub dns_capture_source: DnsCaptureSource,
    /// ztunnel's outbound listener (15001).
    pub outbound_port: u16,
    pub dns_port: u16,
    /// Packet marks the rules exempt, compared under `exempt_mark_mask`: ztunnel's own sockets
    /// (0x539) and connections it accepted (0x111).
    pub exempt_marks: Vec<u32>,
    pub exempt_mark_mask: u32,
    /// Destinations the rules exempt: replies to kubelet's probes, which arrive from these
    /// addresses.
    pub host_probe_snat_ips: Vec<IpAddr>,
}

impl AmbientCapture {
    /// The capture of a pod istio-cni says it redirected (`enabled` or `pending`); `None` when the
    /// annotation is absent or another value (nothing was set up).
    pub fn from_pod(meta: &ObjectMeta, settings: &AmbientSettings) -> Option<AmbientCapture> {
        let redirection = Redirection::of(meta)?;
        let (dns_capture, dns_capture_source) =
            match istio::annotation(meta, ambient::DNS_CAPTURE_ANNOTATION) {
                None => (settings.dns_capture, DnsCaptureSource::Install),
                Some(v) => match parse_go_bool(v) {
                    Some(b) => (b, DnsCaptureSource::PodAnnotation),
                    None => (
                        false,
                        DnsCaptureSource::UnreadableAnnotation {
                            value: v.to_string(),
                        },
                    ),
                },
            };
        Some(AmbientCapture {
            redirection,
            dns_capture,
            dns_capture_source,
            outbound_port: ambient::ZTUNNEL_OUTBOUND_PORT,
            dns_port: ambient::ZTUNNEL_DNS_PORT,
            exempt_marks: vec![ambient::INPOD_MARK, ambient::INPOD_TPROXY_MARK],
            exempt_mark_mask: ambient::INPOD_MASK,
            host_probe_snat_ips: settings.host_probe_snat_ips.clone(),
        })
    }

    /// Whether the rules let a packet with this mark through as ztunnel's own.
    pub fn mark_exempt(&self, mark: u32) -> bool {
        self.exempt_marks
            .iter()
            .any(|m| mark & self.exempt_mark_mask == m & self.exempt_mark_mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(annotations: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_istio_values_mean_redirected() {
        let s = AmbientSettings::default();
        assert!(AmbientCapture::from_pod(&meta(&[]), &s).is_none());
        let disabled = meta(&[(ambient::REDIRECTION_ANNOTATION, "disabled")]);
        assert!(AmbientCapture::from_pod(&disabled, &s).is_none());
        let pending = meta(&[(ambient::REDIRECTION_ANNOTATION, "pending")]);
        assert_eq!(
            AmbientCapture::from_pod(&pending, &s).unwrap().redirection,
            Redirection::Pending
        );
    }

    #[test]
    fn dns_capture_pod_annotation_beats_the_install() {
        let s = AmbientSettings::default();
        let c =
            AmbientCapture::from_pod(&meta(&[(ambient::REDIRECTION_ANNOTATION, "enabled")]), &s)
                .unwrap();
        assert!(c.dns_capture);
        assert_eq!(c.dns_capture_source, DnsCaptureSource::Install);
        let off = meta(&[
            (ambient::REDIRECTION_ANNOTATION, "enabled"),
            (ambient::DNS_CAPTURE_ANNOTATION, "false"),
        ]);
        let c = AmbientCapture::from_pod(&off, &s).unwrap();
        assert!(!c.dns_capture);
        let on = meta(&[
            (ambient::REDIRECTION_ANNOTATION, "enabled"),
            (ambient::DNS_CAPTURE_ANNOTATION, "true"),
        ]);
        let install_off = AmbientSettings {
            dns_capture: false,
            ..AmbientSettings::default()
        };
        assert!(
            AmbientCapture::from_pod(&on, &install_off)
                .unwrap()
                .dns_capture
        );
    }

    #[test]
    fn marks_compare_under_the_mask() {
        let c = AmbientCapture::from_pod(
            &meta(&[(ambient::REDIRECTION_ANNOTATION, "enabled")]),
            &AmbientSettings::default(),
        )
        .unwrap();
        assert!(c.mark_exempt(0x539));
        assert!(c.mark_exempt(0x1539));
        assert!(c.mark_exempt(0x111));
        assert!(!c.mark_exempt(0));
        assert!(!c.mark_exempt(0x53a));
    }
}
