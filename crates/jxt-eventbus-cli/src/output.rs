//! How commands print: aligned tables for people, one JSON object per line
//! for programs, progress bars only on a terminal.
//!
//! Tables use comfy-table rather than hand-padded `format!`: it measures
//! wide characters and keeps columns aligned whatever the content. Colour
//! goes through anstream, which drops it when the stream is not a terminal
//! or `NO_COLOR` is set.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Result;
use comfy_table::{presets, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// A borderless table with `header`, columns aligned.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.to_vec());
    t
}

/// Prints a table on stdout, each line without trailing blanks.
pub(crate) fn print_table(t: &Table) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for line in t.to_string().lines() {
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Prints one JSON object on a line of its own.
pub(crate) fn json_line(value: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// A progress bar (with `len`) or spinner (without) on stderr, hidden
/// unless stderr is a terminal: piped output and logs stay clean.
pub(crate) fn progress(len: Option<u64>, message: &str) -> ProgressBar {
    let bar = match len {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(120));
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_message(message.to_string());
    bar
}

/// A time as RFC 3339 in UTC with milliseconds.
pub(crate) fn time(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
