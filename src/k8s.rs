//! `idagent k8s manifest` (being written).

/// Prints the manifests for `args`.
pub fn manifest(args: &crate::cli::K8sManifestArgs) -> Result<String, String> {
    let _ = args;
    Err("not built yet".into())
}
