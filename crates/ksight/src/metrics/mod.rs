//! Metrics: the per-scrape model, its encoders, and ksight's own metrics.

pub mod encode;
pub mod model;
pub mod own;
