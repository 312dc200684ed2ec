//! Live measurements for the controller: CPU and memory from `/proc`, and
//! the balancer's lock-free latency histograms.

pub mod cpu;
pub mod histogram;
pub mod history;
pub mod host;
pub mod process;
