//! `idagent-fakes --dir DIR`: run the fake upstreams until Ctrl-C, for trying idagent's
//! interception without the internet.
//!
//! Prints the idagent arguments that point at the fakes on stdout (one a line) and a short
//! how-to on stderr. Owns: argument parsing and the terminal; everything else is the library.

#![forbid(unsafe_code)]

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Local fake upstreams (www.google.com on HTTP and HTTPS, api.openai.com on HTTPS) that record
/// every request, listening on 127.0.0.1 ephemeral ports.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Directory for the test CA (ca.pem), the leaf certificates and upstream-map.txt; created
    /// if missing, and a ca-key.pem already there is reused so a trusted CA stays valid.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let fakes = match idagent_fakes::start(&args.dir).await {
        Ok(fakes) => fakes,
        Err(e) => {
            let mut message = format!("idagent-fakes: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    eprintln!("idagent-fakes: serving on 127.0.0.1; pass these arguments to idagent:");
    for value in fakes.upstream_map_args() {
        println!("--upstream-map={value}");
    }
    println!("--upstream-ca={}", fakes.ca_pem_path.display());
    eprintln!(
        "idagent-fakes: or: --upstream-map-file {} --upstream-ca {}",
        fakes.upstream_map_path.display(),
        fakes.ca_pem_path.display()
    );
    eprintln!(
        "idagent-fakes: try: curl --cacert {} --resolve api.openai.com:{port}:127.0.0.1 \
         -H 'Authorization: Bearer sk-test' https://api.openai.com:{port}/v1/models",
        fakes.ca_pem_path.display(),
        port = fakes.openai_https.port(),
    );
    eprintln!("idagent-fakes: Ctrl-C to stop");
    let stopped = tokio::signal::ctrl_c().await;
    fakes.shutdown().await;
    match stopped {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idagent-fakes: wait for Ctrl-C: {e}");
            ExitCode::FAILURE
        }
    }
}
