//! The `eks` detector, as the Collector's `internal/aws/eks`:
//!
//! 1. Not on Kubernetes (`KUBERNETES_SERVICE_HOST` unset or empty): nothing detected.
//! 2. Is this EKS? The Collector asks the API server for its version (`GET /version`, which
//!    every authenticated client may read) and looks for `-eks-` in `gitVersion`
//!    (`v1.30.4-eks-a737599`). sluice does the same, with the pod's service account: the
//!    in-cluster config (`KUBERNETES_SERVICE_HOST`/`_PORT`, the token and CA under
//!    `/var/run/secrets/kubernetes.io/serviceaccount/`). No answer is an error (retried until
//!    `timeout`); another distribution is "not EKS": nothing detected.
//! 3. `cloud.provider=aws`, `cloud.platform=aws_eks` (on by default).
//! 4. The off-by-default attributes come from IMDS when it answers (`host.id`,
//!    `cloud.availability_zone`, `cloud.region`, `cloud.account.id`, `host.image.id`,
//!    `host.type` from the identity document, `host.name` from `meta-data/hostname`). When IMDS
//!    does not answer (a pod off the host network behind an IMDSv2 hop limit of 1, EKS Auto
//!    Mode), the Collector falls back to the Kubernetes API and the EC2 API. sluice does the
//!    Kubernetes half: the Node named by the variable `node_from_env_var` names, whose
//!    `spec.providerID` (`aws:///eu-west-1a/i-0abc...`) gives `cloud.availability_zone`,
//!    `cloud.region` (the zone without its letter) and `host.id`; asking for an attribute
//!    only the EC2 API has (`cloud.account.id`, `host.image.id`, `host.type`, `host.name`) is
//!    then an error that says how to give the pod IMDS.
//!
//! Unlike the Collector, sluice does not contact IMDS when no IMDS attribute is enabled (the
//! Collector reads the identity document even for the default two, and fails without it).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use tokio::time::Instant;

use super::DetectedResource;
use super::config::Enabled;
use super::detect::{DetectError, HostEnvironment, SEMCONV_SCHEMA_URL, by_deadline};
use super::imds::ImdsClient;

pub use crate::SERVICE_ACCOUNT_DIR;
const EKS_VERSION_MARK: &str = "-eks-";

/// From the identity document.
const DOCUMENT_ATTRIBUTES: [&str; 6] = [
    "host.id",
    "cloud.availability_zone",
    "cloud.region",
    "cloud.account.id",
    "host.image.id",
    "host.type",
];
/// Without IMDS, only the EC2 API has these.
const EC2_API_ATTRIBUTES: [&str; 4] = [
    "cloud.account.id",
    "host.image.id",
    "host.type",
    "host.name",
];

pub struct EksDetector {
    pub imds: Arc<ImdsClient>,
    pub attributes: Enabled,
    pub node_from_env_var: String,
}

impl EksDetector {
    pub async fn detect(
        &self,
        host: &HostEnvironment,
        deadline: Instant,
    ) -> Result<DetectedResource, DetectError> {
        if host
            .var("KUBERNETES_SERVICE_HOST")
            .is_none_or(|h| h.is_empty())
        {
            return Ok(DetectedResource::default());
        }
        let client = in_cluster_client(host)?;
        let version = by_deadline(
            deadline,
            "isEks() error retrieving cluster version",
            async { client.apiserver_version().await.map_err(|e| kube_error(&e)) },
        )
        .await?;
        if !version.git_version.contains(EKS_VERSION_MARK) {
            tracing::info!(
                detector = "eks",
                git_version = version.git_version,
                "the cluster is not EKS: no eks attributes"
            );
            return Ok(DetectedResource::default());
        }
        let mut values: Vec<(&'static str, String)> = vec![
            ("cloud.provider", "aws".into()),
            ("cloud.platform", "aws_eks".into()),
        ];
        let wanted = |names: &[&str]| self.attributes.any(names);
        if wanted(&DOCUMENT_ATTRIBUTES) || wanted(&["host.name"]) {
            let reachable = by_deadline(deadline, "IMDS", self.imds.probe(deadline)).await;
            match reachable {
                Ok(_) => values.extend(self.read_imds(deadline).await?),
                Err(e) => {
                    tracing::info!(
                        detector = "eks",
                        endpoint = self.imds.endpoint(),
                        reason = %e,
                        "EC2 instance metadata not reachable from this pod: reading the Node's providerID instead"
                    );
                    values.extend(self.read_node(host, &client, deadline).await?);
                }
            }
        }
        Ok(DetectedResource {
            attributes: self.attributes.pick(values),
            schema_url: SEMCONV_SCHEMA_URL.to_string(),
        })
    }

    async fn read_imds(
        &self,
        deadline: Instant,
    ) -> Result<Vec<(&'static str, String)>, DetectError> {
        let mut values = Vec::new();
        if self.attributes.any(&DOCUMENT_ATTRIBUTES) {
            let doc = by_deadline(
                deadline,
                "failed getting identity document",
                self.imds.identity_document(deadline),
            )
            .await?;
            values.extend([
                ("host.id", doc.instance_id),
                ("cloud.availability_zone", doc.availability_zone),
                ("cloud.region", doc.region),
                ("cloud.account.id", doc.account_id),
                ("host.image.id", doc.image_id),
                ("host.type", doc.instance_type),
            ]);
        }
        if self.attributes.on("host.name") {
            let name = by_deadline(
                deadline,
                "failed getting hostname",
                self.imds.metadata("hostname", deadline),
            )
            .await?;
            values.push(("host.name", name));
        }
        Ok(values)
    }

    async fn read_node(
        &self,
        host: &HostEnvironment,
        client: &kube::Client,
        deadline: Instant,
    ) -> Result<Vec<(&'static str, String)>, DetectError> {
        let missing: Vec<&str> = EC2_API_ATTRIBUTES
            .into_iter()
            .filter(|a| self.attributes.on(a))
            .collect();
        if !missing.is_empty() {
            return Err(DetectError::Unsupported(format!(
                "{} need the EC2 instance metadata service, which does not answer this pod ({}); without it the Collector asks the EC2 API, which sluice does not call. Let the pod reach IMDS (an IMDSv2 hop limit of 2 on the node's launch template, or hostNetwork: true), or disable these attributes",
                missing.join(", "),
                self.imds.endpoint()
            )));
        }
        let node_name = Some(self.node_from_env_var.as_str())
            .filter(|v| !v.is_empty())
            .and_then(|v| host.var(v))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                DetectError::InvalidInput(format!(
                    "can't get K8s Instance Metadata; node name is empty (eks.node_from_env_var is {:?}; set it to a variable holding spec.nodeName from the downward API)",
                    self.node_from_env_var
                ))
            })?;
        let nodes: kube::Api<Node> = kube::Api::all(client.clone());
        let node = by_deadline(
            deadline,
            &format!("can't get K8s Instance Metadata; failed to retrieve k8s node {node_name:?}"),
            async { nodes.get(&node_name).await.map_err(|e| kube_error(&e)) },
        )
        .await?;
        let provider_id = node.spec.and_then(|s| s.provider_id).unwrap_or_default();
        let (region, zone, instance) = parse_provider_id(&provider_id).ok_or_else(|| {
            DetectError::InvalidResponse(format!(
                "failed to retrieve region or instanceId from providerID: {provider_id:?}"
            ))
        })?;
        Ok(vec![
            ("host.id", instance),
            ("cloud.availability_zone", zone),
            ("cloud.region", region),
        ])
    }
}

/// `aws:///<zone>/<instance>` → (region, zone, instance), the region being the zone without
/// its last character, as the Collector derives it.
pub fn parse_provider_id(id: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() < 5 || parts[0] != "aws:" || parts[3].is_empty() || parts[4].is_empty() {
        return None;
    }
    let zone = parts[3];
    let mut region = zone.to_string();
    region.pop();
    Some((region, zone.to_string(), parts[4].to_string()))
}

/// The in-cluster client: the API server from `KUBERNETES_SERVICE_HOST`/`_PORT` over HTTPS,
/// trusting the service account's CA and sending its token (re-read when it rotates).
fn in_cluster_client(host: &HostEnvironment) -> Result<kube::Client, DetectError> {
    let not_in_cluster = |why: String| {
        DetectError::InvalidInput(format!("unable to load in-cluster configuration: {why}"))
    };
    let server = host.var("KUBERNETES_SERVICE_HOST").unwrap_or_default();
    let port = host
        .var("KUBERNETES_SERVICE_PORT")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            not_in_cluster(
                "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined".into(),
            )
        })?;
    let port: u16 = port
        .parse()
        .map_err(|_| not_in_cluster(format!("KUBERNETES_SERVICE_PORT {port:?} is not a port")))?;
    let authority = match server.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{server}:{port}"),
    };
    let url: http::Uri = format!("https://{authority}")
        .parse()
        .map_err(|e| not_in_cluster(format!("https://{authority}: {e}")))?;
    let dir = host.path(SERVICE_ACCOUNT_DIR);
    let ca_path = dir.join("ca.crt");
    let ca = std::fs::read(&ca_path)
        .map_err(|e| not_in_cluster(format!("{}: {e}", ca_path.display())))?;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let roots: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&ca)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| not_in_cluster(format!("{}: {e}", ca_path.display())))?;
    if roots.is_empty() {
        return Err(not_in_cluster(format!(
            "{} holds no certificate",
            ca_path.display()
        )));
    }
    let mut config = kube::Config::new(url);
    config.root_cert = Some(roots);
    config.auth_info.token_file = Some(dir.join("token").display().to_string());
    kube::Client::try_from(config).map_err(|e| not_in_cluster(kube_error(&e).to_string()))
}

fn kube_error(e: &kube::Error) -> DetectError {
    match e {
        kube::Error::Api(status) => DetectError::Status(format!(
            "the API server answered {} {}: {}",
            status.code, status.reason, status.message
        )),
        other => {
            let mut s = other.to_string();
            let mut cause = std::error::Error::source(other);
            while let Some(c) = cause {
                s.push_str(": ");
                s.push_str(&c.to_string());
                cause = c.source();
            }
            DetectError::Unreachable(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids_as_the_collector_reads_them() {
        assert_eq!(
            parse_provider_id("aws:///us-west-2a/i-049ca2df511bec762"),
            Some((
                "us-west-2".into(),
                "us-west-2a".into(),
                "i-049ca2df511bec762".into()
            ))
        );
        for bad in [
            "",
            "aws:///us-west-2a/",
            "gce://p/z/i",
            "aws://us-west-2a/i-1",
            "aws:////i-1",
        ] {
            assert_eq!(parse_provider_id(bad), None, "{bad:?}");
        }
    }
}
