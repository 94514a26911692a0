//! kafka benchmark (filled in with the kafka backend).

use anyhow::{bail, Result};

use super::{BenchArgs, SideResult};

pub(crate) async fn run(_args: &BenchArgs) -> Result<(SideResult, SideResult, &'static str)> {
    bail!("the kafka benchmark is not implemented yet")
}
