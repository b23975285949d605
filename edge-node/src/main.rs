use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    edge_node::cli::run(edge_node::cli::Cli::parse()).await
}
