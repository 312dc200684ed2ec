//! Placeholder: the demo app is being written.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoAppArgs {
    /// Port to listen on (loopback).
    #[arg(long, env = "PORT")]
    pub port: u16,
}

pub async fn run(_args: DemoAppArgs) -> anyhow::Result<()> {
    anyhow::bail!("demo app not implemented yet")
}
