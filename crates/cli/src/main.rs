//! `writebackctl`: parses the command line and runs it; exits non-zero with
//! the reason code on failure.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    writeback_identity::install_crypto_provider();
    // A core file could hold a password read from standard input or a token.
    if let Err(e) = writeback_core::harden::no_core_dumps() {
        eprintln!("warning: cannot turn core dumps off: {e}");
    }
    let cli = writeback_cli::Cli::parse();
    let mut stdout = std::io::stdout();
    match writeback_cli::run(cli, &mut std::io::stdin().lock(), &mut stdout).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
