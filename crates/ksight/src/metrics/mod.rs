//! Metrics: the per-scrape model, the format a scraper asked for, its encoders, and
//! ksight's own metrics.

pub mod encode;
pub mod format;
pub mod model;
pub mod proto;
