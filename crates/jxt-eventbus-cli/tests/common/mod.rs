//! Running the `eventbus` binary as a user does, for the process tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::time::{Duration, Instant};

use assert_cmd::Command;

/// `eventbus` with no `EVENTBUS_*` variable from the test's environment:
/// each test says which configuration it runs with.
pub fn eventbus() -> Command {
    let mut cmd = Command::cargo_bin("eventbus").expect("the eventbus binary");
    for (name, _) in std::env::vars_os() {
        if name
            .to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("EVENTBUS_")
        {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("NO_COLOR").timeout(Duration::from_secs(120));
    cmd
}

/// What a run printed, as text, and how it ended.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "{self}");
        self
    }

    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{self}");
        self
    }

    /// Stdout's lines parsed as JSON objects.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{self}")))
            .collect()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to its end.
pub fn run(cmd: &mut Command) -> Run {
    let started = Instant::now();
    let out = cmd.output().expect("run eventbus");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// Runs `eventbus ARGS`.
pub fn eventbus_run(args: &[&str]) -> Run {
    run(eventbus().args(args))
}
