//! The derived service key: every replica of a deployment shares one baseline.
//!
//! Default order: `namespace/workload` when the owner is known (Tetragon's `workload`),
//! else the pod name with its ReplicaSet and pod hashes stripped, else the Compose
//! service label (plain Docker hosts), else the image repository without registry, tag
//! or digest, else the container name. An event with none of
//! those belongs to `unattributed/<node>`, so it is neither dropped nor merged into a
//! real service.

use serde::Deserialize;

use crate::event::Workload;

/// How service keys are derived.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceKeyConfig {
    /// A pod label whose value names the service when present (for example
    /// `app.kubernetes.io/name`); checked before the default order.
    #[serde(default)]
    pub label: Option<String>,
}

/// The label Docker Compose puts on every container of a service.
const COMPOSE_SERVICE_LABEL: &str = "com.docker.compose.service";

/// Derives service keys for events.
#[derive(Debug, Clone, Default)]
pub struct ServiceKeyer {
    config: ServiceKeyConfig,
}

/// Kubernetes' alphabet for generated name suffixes (no vowels, no 0/1/3, so they never
/// spell words): used to tell `checkout-6d9f7c8b5-x2x7q` from `checkout-api`.
fn is_k8s_hash_char(c: char) -> bool {
    matches!(c, 'b'..='d' | 'f'..='h' | 'j'..='n' | 'p'..='t' | 'v'..='x' | 'z' | '2' | '4'..='9')
}

fn is_hash_segment(segment: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&segment.len()) && segment.chars().all(is_k8s_hash_char)
}

/// Strips the generated suffixes from a pod name: `checkout-6d9f7c8b5-x2x7q` →
/// `checkout` (Deployment), `agent-x2x7q` → `agent` (DaemonSet, Job), `db-0` → `db`
/// (StatefulSet), `backup-29012345-x2x7q` → `backup` (CronJob).
pub fn workload_from_pod_name(pod: &str) -> &str {
    let mut end = pod.len();
    let mut stripped_pod_hash = false;
    if let Some(i) = pod[..end].rfind('-') {
        let last = &pod[i + 1..end];
        if i > 0 && is_hash_segment(last, 5, 5) {
            end = i;
            stripped_pod_hash = true;
        } else if i > 0 && !last.is_empty() && last.chars().all(|c| c.is_ascii_digit()) {
            return &pod[..i];
        }
    }
    if stripped_pod_hash && let Some(i) = pod[..end].rfind('-') {
        let prev = &pod[i + 1..end];
        // Six to ten of the hash alphabet, digits or not (about one ReplicaSet hash in
        // twenty has none): without vowels, no word is that long.
        let replica_set = is_hash_segment(prev, 6, 10);
        let cron_job = prev.len() >= 8 && prev.chars().all(|c| c.is_ascii_digit());
        if i > 0 && (replica_set || cron_job) {
            end = i;
        }
    }
    &pod[..end]
}

/// `ghcr.io/acme/worker` → `acme/worker`: the registry host is where an image is
/// stored, not what it is; the rest of the path tells `acme/api` from `other/api`.
fn without_registry(repository: &str) -> &str {
    match repository.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest,
        _ => repository,
    }
}

impl ServiceKeyer {
    pub fn new(config: ServiceKeyConfig) -> Self {
        ServiceKeyer { config }
    }

    /// The service key for a workload.
    pub fn key(&self, w: &Workload) -> String {
        let name = self.name(w);
        match (name, w.namespace.as_deref()) {
            (Some(name), Some(ns)) if !ns.is_empty() => format!("{ns}/{name}"),
            (Some(name), _) => name.to_owned(),
            (None, _) => format!("unattributed/{}", w.node.as_deref().unwrap_or("unknown")),
        }
    }

    fn name<'a>(&self, w: &'a Workload) -> Option<&'a str> {
        let non_empty = |s: Option<&'a String>| s.map(String::as_str).filter(|s| !s.is_empty());
        if let Some(label) = &self.config.label
            && let Some(v) = non_empty(w.labels.get(label))
        {
            return Some(v);
        }
        non_empty(w.workload.as_ref())
            .or_else(|| non_empty(w.pod.as_ref()).map(workload_from_pod_name))
            .or_else(|| non_empty(w.labels.get(COMPOSE_SERVICE_LABEL)))
            .or_else(|| non_empty(w.image.repository.as_ref()).map(without_registry))
            .or_else(|| non_empty(w.container_name.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Image;

    #[test]
    fn deployment_pod_names_lose_both_hashes() {
        assert_eq!(
            workload_from_pod_name("checkout-6d9f7c8b5-x2x7q"),
            "checkout"
        );
        assert_eq!(
            workload_from_pod_name("shop-api-7c9d8f6b4d-k2m9z"),
            "shop-api"
        );
        // One ReplicaSet hash in about twenty has no digit.
        assert_eq!(
            workload_from_pod_name("frontend-bsmbsgnfb-4phlh"),
            "frontend"
        );
    }

    #[test]
    fn daemonset_statefulset_and_cronjob_suffixes_are_stripped() {
        assert_eq!(workload_from_pod_name("node-agent-x2x7q"), "node-agent");
        assert_eq!(workload_from_pod_name("postgres-0"), "postgres");
        assert_eq!(workload_from_pod_name("backup-29012345-x2x7q"), "backup");
    }

    #[test]
    fn plain_names_are_left_alone() {
        assert_eq!(workload_from_pod_name("checkout"), "checkout");
        assert_eq!(workload_from_pod_name("shop-api"), "shop-api");
        assert_eq!(workload_from_pod_name("my-first-app"), "my-first-app");
    }

    #[test]
    fn owner_workload_wins_over_pod_name() {
        let w = Workload {
            namespace: Some("shop".into()),
            pod: Some("checkout-6d9f7c8b5-x2x7q".into()),
            workload: Some("checkout-v2".into()),
            ..Workload::default()
        };
        assert_eq!(ServiceKeyer::default().key(&w), "shop/checkout-v2");
    }

    #[test]
    fn image_repository_is_used_without_registry_or_tag() {
        let w = Workload {
            image: Image::parse("ghcr.io/acme/worker:1.2"),
            container_name: Some("worker_1".into()),
            ..Workload::default()
        };
        assert_eq!(ServiceKeyer::default().key(&w), "acme/worker");
    }

    #[test]
    fn events_without_identity_go_to_the_node_unattributed_service() {
        let w = Workload {
            node: Some("node-a".into()),
            ..Workload::default()
        };
        assert_eq!(ServiceKeyer::default().key(&w), "unattributed/node-a");
    }

    #[test]
    fn a_configured_label_names_the_service() {
        let mut w = Workload {
            namespace: Some("shop".into()),
            pod: Some("checkout-6d9f7c8b5-x2x7q".into()),
            ..Workload::default()
        };
        w.labels
            .insert("app.kubernetes.io/name".into(), "payments".into());
        let keyer = ServiceKeyer::new(ServiceKeyConfig {
            label: Some("app.kubernetes.io/name".into()),
        });
        assert_eq!(keyer.key(&w), "shop/payments");
    }
}
