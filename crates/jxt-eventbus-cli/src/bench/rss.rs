//! The resident memory of one side of a benchmark, apart from the others.
//!
//! Every side runs in the same process, one after the other, so the
//! process's own peak (`VmHWM`) covers all of them. [`RssSampler`] reads the
//! current resident set (`VmRSS`) on a thread of its own every
//! [`INTERVAL`] while one side runs and keeps the largest value: that side's
//! peak. Memory an earlier side freed may still be held by the allocator
//! when the next one starts, so the resident set at the side's start is kept
//! too; the side's own growth is the peak minus it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the resident set is read: short against any side's run (a
/// second or more), cheap (one read of `/proc/self/status`, some 20 µs).
const INTERVAL: Duration = Duration::from_millis(10);

/// The resident set over one side's run, in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RssSpan {
    /// When the side started.
    pub(crate) start_kib: u64,
    /// The largest value read while it ran (at least `start_kib`).
    pub(crate) peak_kib: u64,
}

impl RssSpan {
    /// The side's peak, in MiB.
    pub(crate) fn peak_mib(&self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }

    /// What the side added to the resident set at its peak, in MiB.
    pub(crate) fn growth_mib(&self) -> f64 {
        self.peak_kib.saturating_sub(self.start_kib) as f64 / 1024.0
    }
}

/// Reads the resident set every [`INTERVAL`] until [`RssSampler::finish`].
#[derive(Debug)]
pub(crate) struct RssSampler {
    start_kib: u64,
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling; `None` where `/proc/self/status` cannot be read
    /// (not Linux).
    pub(crate) fn start() -> Option<Self> {
        let start_kib = rss_kib()?;
        let peak_kib = Arc::new(AtomicU64::new(start_kib));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, done) = (peak_kib.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("bench-rss".into())
            .spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if let Some(kib) = rss_kib() {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    std::thread::sleep(INTERVAL);
                }
            })
            .ok()?;
        Some(RssSampler {
            start_kib,
            peak_kib,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops sampling (one last read included) and returns the span.
    pub(crate) fn finish(mut self) -> RssSpan {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(kib) = rss_kib() {
            self.peak_kib.fetch_max(kib, Ordering::Relaxed);
        }
        RssSpan {
            start_kib: self.start_kib,
            peak_kib: self.peak_kib.load(Ordering::Relaxed),
        }
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The process's current resident set (`VmRSS`), in KiB.
fn rss_kib() -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_from_a_status_file() {
        let status = "Name:\teventbus\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(102_400));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn a_side_that_grows_the_resident_set_shows_it() {
        let sampler = RssSampler::start().expect("Linux /proc");
        // 64 MiB written page by page, so it is resident, held until the
        // sampler has finished.
        let block = vec![1u8; 64 << 20];
        let span = sampler.finish();
        assert!(block.iter().step_by(4096).all(|b| *b == 1));
        assert!(span.peak_kib >= span.start_kib);
        assert!(
            span.growth_mib() >= 60.0,
            "64 MiB resident should show: {span:?}"
        );
    }
}
