//! Running the Go programs under `tests/interop/` (one Go module, its own
//! `go.mod`/`go.sum` pinning sarama and Watermill) with `go run`.
//!
//! The first run downloads the pinned modules from the Go module proxy
//! (`scripts/bootstrap` does that ahead of time); `go.sum` is committed and
//! `-mod=readonly` is set, so nothing else is fetched or changed, and
//! `GOTOOLCHAIN=local` keeps Go from downloading a toolchain. Builds are
//! cached under `$HOME/.cache/jxt-eventbus/go-build`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Go module holding the interop programs.
pub const MODULE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");

/// The `go` binary: `$EVENTBUS_DEV_GO`, `go` on `PATH`, or `/usr/local/go/bin/go`.
/// `None` after a skip note when there is none; a panic under
/// `EVENTBUS_DEV_REQUIRE_BROKERS=1`.
pub fn go() -> Option<PathBuf> {
    let candidates = std::env::var_os("EVENTBUS_DEV_GO")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::var_os("PATH").into_iter().flat_map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("go"))
                .collect::<Vec<_>>()
        }))
        .chain([PathBuf::from("/usr/local/go/bin/go")]);
    for c in candidates {
        if c.is_file() {
            return Some(c);
        }
    }
    let why = "no `go` binary (set EVENTBUS_DEV_GO or put Go 1.25+ on PATH)";
    assert!(
        !super::required(),
        "EVENTBUS_DEV_REQUIRE_BROKERS=1 but {why}"
    );
    eprintln!("skipped: {why}");
    None
}

/// `go run ./<package> <args>` in [`MODULE`] with `stdin`; its stdout. Panics
/// with its stderr when it fails.
pub fn run(go: &Path, package: &str, args: &[&str], stdin: &str) -> String {
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    let mut child = Command::new(go)
        .current_dir(MODULE)
        .arg("run")
        .arg(format!("./{package}"))
        .args(args)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=readonly")
        .env("GOCACHE", home.join(".cache/jxt-eventbus/go-build"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", go.display()));
    let mut input = child.stdin.take().unwrap();
    let text = stdin.to_string();
    let writer = std::thread::spawn(move || input.write_all(text.as_bytes()));
    let out = child.wait_with_output().expect("go run");
    writer.join().unwrap().expect("writing to go run");
    assert!(
        out.status.success(),
        "go run ./{package} {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}
