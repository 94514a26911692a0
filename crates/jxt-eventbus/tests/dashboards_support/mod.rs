//! Helpers of `tests/dashboards.rs`: the PromQL name extractor, the metric
//! names an exposition declares, and the expressions of the shipped dashboard
//! and alert rules.
#![allow(dead_code, unreachable_pub)]

pub mod exposition;
pub mod promql;
pub mod shipped;
