//! (being written)

#[derive(Debug, thiserror::Error)]
pub enum NetInitError {
    #[error("net-init: {0}")]
    Setup(String),
}

/// `idagent net-init`.
pub fn command(args: &crate::cli::NetInitArgs) -> Result<(), NetInitError> {
    let _ = args;
    Err(NetInitError::Setup("not built yet".into()))
}
