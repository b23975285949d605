use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    // Everything the box writes (database, WAL, backups, keys, logs it opens) is for
    // its own user only, whatever umask it was started with.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // Errors print on stderr and exit 1; see `cli` for the other exit codes.
    let code = edge_node::cli::run(edge_node::cli::Cli::parse()).await?;
    Ok(std::process::ExitCode::from(code))
}
