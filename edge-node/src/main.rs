use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Everything the box writes (database, WAL, backups, keys, logs it opens) is for
    // its own user only, whatever umask it was started with.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    edge_node::cli::run(edge_node::cli::Cli::parse()).await
}
