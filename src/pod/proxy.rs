//! (being written)

/// `idagent proxy`.
pub async fn command(args: crate::cli::ProxyArgs) -> anyhow::Result<std::process::ExitCode> {
    let _ = args;
    anyhow::bail!("not built yet")
}
