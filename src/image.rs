//! Building the guest image (`idagent-guest:<version>` and `:latest`) from `Dockerfile.guest`.
//!
//! Owns: choosing the base (pull `debian:bookworm-slim` when a registry answers; otherwise
//! bootstrap `idagent-base:bookworm` from Debian's packages with `guest/bootstrap-base.sh`
//! (mmdebstrap) and import it through the Engine API), packing the build context, and showing
//! the build's progress. Does not own: running containers.

use crate::runtime::docker::DockerRuntime;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Base pulled from a registry when one answers.
pub const BASE_REGISTRY: &str = "debian:bookworm-slim";
/// Base bootstrapped offline when none does.
pub const BASE_LOCAL: &str = "idagent-base:bookworm";
pub const GUEST_REPO: &str = "idagent-guest";
/// How long a registry gets to start answering a pull before we bootstrap instead.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(45);

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("guest image sources not found at {0} (expected Dockerfile.guest there; pass --context or set IDAGENT_SOURCE to the idagent checkout)")]
    Context(PathBuf),
    #[error("bootstrap base image with {script}: {reason}")]
    Bootstrap { script: PathBuf, reason: String },
    #[error("import base image {image}: {reason}")]
    Import { image: String, reason: String },
    #[error("build {image}: {reason}")]
    Build { image: String, reason: String },
    #[error("pack build context {path}: {source}")]
    Pack {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The versioned tag of the guest image this idagent builds.
pub fn versioned_tag() -> String {
    format!("{GUEST_REPO}:{}", env!("CARGO_PKG_VERSION"))
}

/// The source checkout holding Dockerfile.guest: `--context`, else the directory idagent was
/// built from, else the current directory.
pub fn resolve_context(given: Option<&Path>) -> Result<PathBuf, ImageError> {
    let candidates: Vec<PathBuf> = match given {
        Some(p) => vec![p.to_owned()],
        None => vec![
            PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            PathBuf::from("."),
        ],
    };
    candidates
        .iter()
        .find(|c| c.join("Dockerfile.guest").is_file())
        .cloned()
        .ok_or_else(|| ImageError::Context(candidates[0].clone()))
}

/// Builds the guest image, printing progress lines to stderr.
pub async fn build(
    rt: &DockerRuntime,
    context: &Path,
    bootstrap: bool,
) -> Result<String, ImageError> {
    let base = choose_base(rt, context, bootstrap).await?;
    let tag = versioned_tag();
    eprintln!(
        "idagent: building {tag} from {} (base {base})",
        context.join("Dockerfile.guest").display()
    );
    let body = pack_context(context)?;
    let opts = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile.guest")
        .t(&tag)
        .rm(true)
        .forcerm(true)
        .buildargs(&HashMap::from([("BASE".to_owned(), base.clone())]))
        .build();
    build_and_tag(rt, opts, body, &tag, GUEST_REPO, true).await?;
    eprintln!("idagent: built {tag} and {GUEST_REPO}:latest");
    build_pod_image(rt, &tag).await?;
    Ok(tag)
}

/// The image `idagent k8s manifest` names (`--idagent-image`, default `idagent:latest`): the
/// guest image (it has `ip` and `iptables`, which net-init runs) with this idagent binary at
/// `/usr/local/bin/idagent`, running as the proxy's uid by default.
pub const POD_REPO: &str = "idagent";

/// Runs one image build (`opts`, the tar `body`) to its end, then tags `tag` as
/// `repo:latest`; with `progress`, the build's lines go to stderr.
async fn build_and_tag(
    rt: &DockerRuntime,
    opts: bollard::query_parameters::BuildImageOptions,
    body: Vec<u8>,
    tag: &str,
    repo: &str,
    progress: bool,
) -> Result<(), ImageError> {
    let fail = |reason: String| ImageError::Build {
        image: tag.to_owned(),
        reason,
    };
    let mut stream = rt
        .client()
        .build_image(opts, None, Some(bollard::body_full(body.into())));
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| fail(e.to_string()))?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(fail(err));
        }
        if let (true, Some(line)) = (progress, info.stream) {
            let line = line.trim_end();
            if !line.is_empty() {
                eprintln!("  {line}");
            }
        }
    }
    let tag_opts = TagImageOptionsBuilder::default()
        .repo(repo)
        .tag("latest")
        .build();
    rt.client()
        .tag_image(tag, Some(tag_opts))
        .await
        .map_err(|e| fail(format!("tag latest: {e}")))
}

async fn build_pod_image(rt: &DockerRuntime, guest_tag: &str) -> Result<(), ImageError> {
    let tag = format!("{POD_REPO}:{}", env!("CARGO_PKG_VERSION"));
    let exe = std::env::current_exe().map_err(|e| ImageError::Build {
        image: tag.clone(),
        reason: format!("locate idagent's own binary: {e}"),
    })?;
    let dockerfile = format!(
        "FROM {guest_tag}\nCOPY idagent /usr/local/bin/idagent\nUSER {}:{}\n",
        crate::pod::PROXY_UID,
        crate::pod::PROXY_GID
    );
    let pack = || -> std::io::Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        // The engine's tar reader refuses GNU sparse entries (type 'S').
        b.sparse(false);
        let mut header = tar::Header::new_gnu();
        header.set_size(dockerfile.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        b.append_data(&mut header, "Dockerfile", dockerfile.as_bytes())?;
        let mut f = std::fs::File::open(&exe)?;
        b.append_file("idagent", &mut f)?;
        b.into_inner()
    };
    let body = pack().map_err(|e| ImageError::Build {
        image: tag.clone(),
        reason: format!("pack the build context: {e}"),
    })?;
    let opts = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&tag)
        .rm(true)
        .forcerm(true)
        .build();
    build_and_tag(rt, opts, body, &tag, POD_REPO, false).await?;
    eprintln!("idagent: built {tag} and {POD_REPO}:latest (for `idagent k8s manifest`)");
    Ok(())
}

async fn choose_base(
    rt: &DockerRuntime,
    context: &Path,
    bootstrap: bool,
) -> Result<String, ImageError> {
    use crate::runtime::ContainerRuntime;
    if rt.image_exists(BASE_LOCAL).await.unwrap_or(false) {
        return Ok(BASE_LOCAL.into());
    }
    if rt.image_exists(BASE_REGISTRY).await.unwrap_or(false) {
        return Ok(BASE_REGISTRY.into());
    }
    if !bootstrap {
        eprintln!("idagent: pulling {BASE_REGISTRY}");
        match tokio::time::timeout(PULL_TIMEOUT, pull(rt, BASE_REGISTRY)).await {
            Ok(Ok(())) => return Ok(BASE_REGISTRY.into()),
            Ok(Err(reason)) => {
                eprintln!("idagent: pull failed ({reason}); bootstrapping a Debian base offline")
            }
            Err(_) => eprintln!(
                "idagent: no registry answered in {}s; bootstrapping a Debian base offline",
                PULL_TIMEOUT.as_secs()
            ),
        }
    }
    bootstrap_base(rt, context).await?;
    Ok(BASE_LOCAL.into())
}

async fn pull(rt: &DockerRuntime, image: &str) -> Result<(), String> {
    let opts = CreateImageOptionsBuilder::default()
        .from_image(image)
        .build();
    let mut stream = rt.client().create_image(Some(opts), None, None);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| e.to_string().lines().next().unwrap_or_default().to_owned())?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(err);
        }
    }
    Ok(())
}

/// mmdebstrap writes a root filesystem tarball; the Engine imports it (`docker import`).
async fn bootstrap_base(rt: &DockerRuntime, context: &Path) -> Result<(), ImageError> {
    let script = context.join("guest/bootstrap-base.sh");
    let dir = tempfile_dir().map_err(|e| ImageError::Bootstrap {
        script: script.clone(),
        reason: e.to_string(),
    })?;
    let tarball = dir.join("base.tar");
    eprintln!("idagent: bootstrapping {BASE_LOCAL} with mmdebstrap (about a minute)");
    let status = tokio::process::Command::new("bash")
        .arg(&script)
        .arg("--tar")
        .arg(&tarball)
        .status()
        .await
        .map_err(|e| ImageError::Bootstrap {
            script: script.clone(),
            reason: e.to_string(),
        })?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(ImageError::Bootstrap {
            script,
            reason: format!("{status} (is mmdebstrap installed and a Debian mirror reachable?)"),
        });
    }
    let file = tokio::fs::File::open(&tarball)
        .await
        .map_err(|e| ImageError::Import {
            image: BASE_LOCAL.into(),
            reason: e.to_string(),
        })?;
    // Stream the tarball (hundreds of MiB) rather than reading it into memory.
    let body = bollard::body_try_stream(futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    }));
    let (repo, tag) = BASE_LOCAL.split_once(':').unwrap_or((BASE_LOCAL, "latest"));
    let opts = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(vec!["CMD [\"/bin/bash\"]".to_owned()])
        .build();
    let mut stream = rt.client().create_image(Some(opts), Some(body), None);
    let mut result = Ok(());
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(err) = info.error_detail.and_then(|d| d.message) {
                    result = Err(err);
                }
            }
            Err(e) => result = Err(e.to_string()),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    result.map_err(|reason| ImageError::Import {
        image: BASE_LOCAL.into(),
        reason,
    })?;
    eprintln!("idagent: imported {BASE_LOCAL}");
    Ok(())
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("idagent-base-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The build context: Dockerfile.guest and victims/ (sources only; no build output).
fn pack_context(context: &Path) -> Result<Vec<u8>, ImageError> {
    let pack_err = |source| ImageError::Pack {
        path: context.to_owned(),
        source,
    };
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder
        .append_path_with_name(context.join("Dockerfile.guest"), "Dockerfile.guest")
        .map_err(pack_err)?;
    // Every victim but the fakes (host-side test servers, a Rust crate: not guest material).
    for entry in std::fs::read_dir(context.join("victims")).map_err(pack_err)? {
        let entry = entry.map_err(pack_err)?;
        if entry.file_name() == "fakes" || !entry.path().is_dir() {
            continue;
        }
        let name = std::path::Path::new("victims").join(entry.file_name());
        builder
            .append_dir_all(&name, entry.path())
            .map_err(pack_err)?;
    }
    builder.into_inner().map_err(pack_err)
}
