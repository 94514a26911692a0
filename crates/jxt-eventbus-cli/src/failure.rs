//! Exit codes and the one line every failure prints.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | done |
//! | 1 | an error: configuration, broker, a check that failed |
//! | 2 | the command line is wrong (clap's own errors use 2 too) |
//! | 3 | a threshold was crossed (`lag --max-lag`) |
//!
//! An error is one line on stderr, its causes joined with `: ` (a
//! configuration with several problems: one line per problem); `-v` prints
//! each cause on a line of its own. Never a backtrace: the causes say what
//! went wrong, and a backtrace of the command says nothing to an operator
//! even with `RUST_BACKTRACE` set.

use std::fmt;
use std::io::Write;

use anstyle::{AnsiColor, Style};

/// Exit code of an error.
pub(crate) const ERROR: u8 = 1;
/// Exit code of a wrong command line.
pub(crate) const USAGE: u8 = 2;
/// Exit code of a crossed threshold.
pub(crate) const THRESHOLD: u8 = 3;

/// The command line asks for something that cannot be done (exit 2).
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A threshold the command was asked to watch was crossed (exit 3).
#[derive(Debug)]
pub(crate) struct Threshold(pub(crate) String);

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Threshold {}

/// A usage error.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    Usage(message.into()).into()
}

/// The exit code for `e`.
pub(crate) fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<Usage>().is_some() {
        USAGE
    } else if e.downcast_ref::<Threshold>().is_some() {
        THRESHOLD
    } else {
        ERROR
    }
}

/// Prints `e` on stderr: one line, or one line per cause with `verbose`.
pub(crate) fn print(e: &anyhow::Error, verbose: bool) {
    let (label, style) = match exit_code(e) {
        THRESHOLD => (
            "threshold",
            Style::new().fg_color(Some(AnsiColor::Yellow.into())).bold(),
        ),
        USAGE => (
            "usage",
            Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
        ),
        _ => (
            "error",
            Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
        ),
    };
    let mut err = anstream::stderr().lock();
    if verbose {
        let _ = writeln!(
            err,
            "eventbus: {style}{label}{style:#}: {}",
            one_line(&e.to_string())
        );
        for cause in e.chain().skip(1) {
            let _ = writeln!(err, "  caused by: {}", one_line(&cause.to_string()));
        }
    } else {
        let _ = writeln!(err, "eventbus: {style}{label}{style:#}: {}", chain_line(e));
    }
}

/// The causes of `e` joined with `: `, leaving out a cause whose text the
/// previous one already ends with (libraries often repeat their source).
fn chain_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = one_line(&cause.to_string());
        if text.is_empty() || out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `text` with its white space tidied, without a registered secret. A
/// message listing several problems (a configuration file with more than
/// one mistake) keeps one line per problem.
fn one_line(text: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect();
    crate::secrets::scrub(&lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_marker_types() {
        assert_eq!(exit_code(&usage("x")), USAGE);
        assert_eq!(exit_code(&Threshold("y".into()).into()), THRESHOLD);
        assert_eq!(exit_code(&anyhow::anyhow!("z")), ERROR);
        let wrapped = anyhow::Error::from(Threshold("lag".into())).context("lag");
        assert_eq!(exit_code(&wrapped), THRESHOLD);
    }

    #[test]
    fn the_chain_is_one_line_without_repeats() {
        let e = anyhow::anyhow!("broker down  at\t1.2.3.4").context("cannot publish");
        assert_eq!(chain_line(&e), "cannot publish: broker down at 1.2.3.4");
        let e = anyhow::anyhow!("a.yaml: x: bad\n a.yaml: y: bad\n").context("configuration");
        assert_eq!(
            chain_line(&e),
            "configuration: a.yaml: x: bad\na.yaml: y: bad"
        );
        let e = anyhow::anyhow!("timed out").context("publish: timed out");
        assert_eq!(chain_line(&e), "publish: timed out");
    }
}
