//! nats benchmark (filled in with the nats backend).

use anyhow::{bail, Result};

use super::{BenchArgs, SideResult};

pub(crate) async fn run(_args: &BenchArgs) -> Result<(SideResult, SideResult, &'static str)> {
    bail!("the nats benchmark is not implemented yet")
}
