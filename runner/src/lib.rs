//! The runner's parts, as a library so the fuzz targets (`fuzz/`) exercise the same code the
//! `runvoy-runner` binary runs: the output splitter, the record framing and the redactor.

pub mod checkout;
pub mod config;
pub mod redact;
pub mod sandbox;
pub mod sink;
pub mod split;
