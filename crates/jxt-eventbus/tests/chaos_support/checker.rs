//! Reads what the consumer processes wrote (one line per handled record)
//! and counts what the contract forbids: acknowledged records never
//! handled, a record handled before an earlier record of its key, and one
//! key handled by two live processes at once. Duplicates are counted, not
//! failed: at least once allows them after a crash.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// One handled record: `key seq partition offset pid start_ns end_ns`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub key: String,
    pub seq: u64,
    pub partition: i32,
    pub offset: i64,
    pub pid: u32,
    pub start_ns: u128,
    pub end_ns: u128,
}

impl Line {
    pub fn to_text(&self) -> String {
        format!(
            "{} {} {} {} {} {} {}\n",
            self.key, self.seq, self.partition, self.offset, self.pid, self.start_ns, self.end_ns
        )
    }

    pub fn parse(text: &str) -> Result<Line, String> {
        let f: Vec<&str> = text.split(' ').collect();
        let bad = || format!("malformed line {text:?}");
        if f.len() != 7 {
            return Err(bad());
        }
        Ok(Line {
            key: f[0].to_string(),
            seq: f[1].parse().map_err(|_| bad())?,
            partition: f[2].parse().map_err(|_| bad())?,
            offset: f[3].parse().map_err(|_| bad())?,
            pid: f[4].parse().map_err(|_| bad())?,
            start_ns: f[5].parse().map_err(|_| bad())?,
            end_ns: f[6].parse().map_err(|_| bad())?,
        })
    }
}

/// Parses every complete line of a log (a process killed in the middle of
/// a write may leave a last line without its newline: it is not counted,
/// and its record was not acknowledged either).
pub fn parse_log(text: &str) -> Result<Vec<Line>, String> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete.lines().map(Line::parse).collect()
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    pub sent: usize,
    pub handled: usize,
    pub distinct: usize,
    pub lost: Vec<(String, u64)>,
    pub duplicates: usize,
    pub order_violations: Vec<String>,
    pub overlaps: Vec<String>,
    pub processes: usize,
}

impl Report {
    /// No loss, no order violation, no overlap.
    pub fn ok(&self) -> bool {
        self.lost.is_empty() && self.order_violations.is_empty() && self.overlaps.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = |v: &[String]| v.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
        write!(
            f,
            "sent {} (acknowledged), handled {} times ({} distinct) by {} processes: \
             lost {}, duplicates {}, order violations {}, overlaps {}",
            self.sent,
            self.handled,
            self.distinct,
            self.processes,
            self.lost.len(),
            self.duplicates,
            self.order_violations.len(),
            self.overlaps.len()
        )?;
        if !self.lost.is_empty() {
            write!(
                f,
                "\n  lost (first): {:?}",
                &self.lost[..self.lost.len().min(5)]
            )?;
        }
        if !self.order_violations.is_empty() {
            write!(f, "\n  order (first): {}", first(&self.order_violations))?;
        }
        if !self.overlaps.is_empty() {
            write!(f, "\n  overlaps (first): {}", first(&self.overlaps))?;
        }
        Ok(())
    }
}

/// Checks `lines` (from every process) against the acknowledged `sent`
/// records (key → sequence numbers, published in order from 0).
pub fn check(sent: &BTreeMap<String, BTreeSet<u64>>, lines: &[Line]) -> Report {
    let mut r = Report {
        sent: sent.values().map(BTreeSet::len).sum(),
        handled: lines.len(),
        processes: lines.iter().map(|l| l.pid).collect::<BTreeSet<_>>().len(),
        ..Report::default()
    };
    let mut by_key: HashMap<&str, Vec<&Line>> = HashMap::new();
    for l in lines {
        by_key.entry(&l.key).or_default().push(l);
    }
    let mut handled = BTreeSet::new();
    for l in lines {
        handled.insert((l.key.as_str(), l.seq));
    }
    r.distinct = handled.len();
    r.duplicates = lines.len() - handled.len();
    for (key, seqs) in sent {
        for &seq in seqs {
            if !handled.contains(&(key.as_str(), seq)) {
                r.lost.push((key.clone(), seq));
            }
        }
    }
    for (key, mut ls) in by_key {
        // One key is handled one record at a time, so its start times
        // order its handlings, across processes too.
        ls.sort_by_key(|l| (l.start_ns, l.end_ns));
        for pair in ls.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.pid != b.pid && b.start_ns < a.end_ns {
                r.overlaps.push(format!(
                    "key {key}: seq {} in pid {} started before seq {} in pid {} ended",
                    b.seq, b.pid, a.seq, a.pid
                ));
            }
        }
        // Redelivery may go back; going ahead of the first acknowledged
        // record of the key not handled yet breaks per-key order.
        let mut pending = sent.get(key).cloned().unwrap_or_default();
        for l in ls {
            if let Some(&first) = pending.first() {
                if l.seq > first {
                    r.order_violations.push(format!(
                        "key {key}: seq {} (pid {}) handled before seq {first}",
                        l.seq, l.pid
                    ));
                }
            }
            pending.remove(&l.seq);
        }
    }
    r.lost.sort();
    r.order_violations.sort();
    r.overlaps.sort();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three keys of ten records: pid 1 handles seqs 0..=5 of each, is
    /// killed after finishing 5 (with 4 and 5 not committed), and pid 2
    /// handles 4..=9 again.
    fn clean_run() -> (BTreeMap<String, BTreeSet<u64>>, Vec<Line>) {
        let mut sent = BTreeMap::new();
        let mut lines = Vec::new();
        let mut clock = 1_000u128;
        for (pid, range) in [(1u32, 0..=5u64), (2, 4..=9)] {
            for seq in range {
                for k in 0..3 {
                    lines.push(Line {
                        key: format!("k{k}"),
                        seq,
                        partition: k,
                        offset: seq as i64,
                        pid,
                        start_ns: clock,
                        end_ns: clock + 5,
                    });
                    clock += 10;
                }
            }
        }
        for k in 0..3 {
            sent.insert(format!("k{k}"), (0..10).collect());
        }
        (sent, lines)
    }

    #[test]
    fn a_clean_run_with_redelivery_passes_and_counts_duplicates() {
        let (sent, lines) = clean_run();
        let r = check(&sent, &lines);
        assert!(r.ok(), "{r}");
        assert_eq!(r.duplicates, 6);
        assert_eq!(r.processes, 2);
    }

    #[test]
    fn a_missing_line_is_lost() {
        let (sent, mut lines) = clean_run();
        let i = lines
            .iter()
            .position(|l| l.key == "k1" && l.seq == 8)
            .unwrap();
        lines.remove(i);
        let r = check(&sent, &lines);
        assert_eq!(r.lost, vec![("k1".to_string(), 8)], "{r}");
        // And seq 9 then went ahead of it.
        assert_eq!(r.order_violations.len(), 1, "{r}");
    }

    #[test]
    fn a_swapped_pair_is_an_order_violation() {
        let (sent, mut lines) = clean_run();
        let a = lines
            .iter()
            .position(|l| l.key == "k2" && l.seq == 7)
            .unwrap();
        let b = lines
            .iter()
            .position(|l| l.key == "k2" && l.seq == 8)
            .unwrap();
        let (ta, tb) = (lines[a].start_ns, lines[b].start_ns);
        lines[a].start_ns = tb;
        lines[a].end_ns = tb + 5;
        lines[b].start_ns = ta;
        lines[b].end_ns = ta + 5;
        let r = check(&sent, &lines);
        assert!(r.lost.is_empty());
        assert_eq!(r.order_violations.len(), 1, "{r}");
        assert!(r.order_violations[0].contains("seq 8"), "{r}");
    }

    #[test]
    fn two_live_processes_on_one_key_overlap() {
        let (sent, mut lines) = clean_run();
        // pid 2's first k0 record starts while pid 1's last one still runs.
        let last1 = lines
            .iter()
            .filter(|l| l.key == "k0" && l.pid == 1)
            .map(|l| l.end_ns)
            .max()
            .unwrap();
        let first2 = lines
            .iter_mut()
            .find(|l| l.key == "k0" && l.pid == 2)
            .unwrap();
        first2.start_ns = last1 - 1;
        let r = check(&sent, &lines);
        assert_eq!(r.overlaps.len(), 1, "{r}");
    }

    #[test]
    fn a_torn_last_line_is_not_counted_and_bad_lines_are_errors() {
        let text = "k 0 0 0 1 10 20\nk 1 0 1 1 30 4";
        assert_eq!(parse_log(text).unwrap().len(), 1);
        assert!(parse_log("k x 0 0 1 10 20\n").is_err());
    }
}
