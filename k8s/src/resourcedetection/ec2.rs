//! The `ec2` detector, as the Collector's `internal/aws/ec2`: probe
//! `/latest/meta-data/instance-id` (no answer: not on EC2, nothing detected, no error, unless
//! `fail_on_missing_metadata`), then the instance identity document and
//! `/latest/meta-data/hostname` (either failing is an error, retried until `timeout`).

use std::sync::Arc;

use tokio::time::Instant;

use super::DetectedResource;
use super::config::Enabled;
use super::detect::{DetectError, SEMCONV_SCHEMA_URL, by_deadline};
use super::imds::ImdsClient;

pub struct Ec2Detector {
    pub imds: Arc<ImdsClient>,
    pub attributes: Enabled,
    pub fail_on_missing_metadata: bool,
}

impl Ec2Detector {
    pub async fn detect(&self, deadline: Instant) -> Result<DetectedResource, DetectError> {
        let endpoint = self.imds.endpoint();
        let probe = by_deadline(
            deadline,
            "EC2 metadata unavailable",
            self.imds.metadata("instance-id", deadline),
        )
        .await;
        if let Err(e) = probe {
            if self.fail_on_missing_metadata {
                return Err(e);
            }
            tracing::info!(
                detector = "ec2",
                endpoint,
                reason = %e,
                "not running on EC2 (no instance metadata): no ec2 attributes"
            );
            return Ok(DetectedResource::default());
        }
        let doc = by_deadline(
            deadline,
            "failed getting identity document",
            self.imds.identity_document(deadline),
        )
        .await?;
        let hostname = by_deadline(
            deadline,
            "failed getting hostname",
            self.imds.metadata("hostname", deadline),
        )
        .await?;
        let values = [
            ("cloud.provider", "aws".to_string()),
            ("cloud.platform", "aws_ec2".to_string()),
            ("cloud.region", doc.region),
            ("cloud.account.id", doc.account_id),
            ("cloud.availability_zone", doc.availability_zone),
            ("host.id", doc.instance_id),
            ("host.image.id", doc.image_id),
            ("host.type", doc.instance_type),
            ("host.name", hostname),
        ];
        Ok(DetectedResource {
            attributes: self.attributes.pick(values),
            schema_url: SEMCONV_SCHEMA_URL.to_string(),
        })
    }
}
