//! Committed artifacts against the code, without a cluster: the CRD YAML
//! and examples, the README's tables, and the inputs the fuzzers found.

mod fuzz_regressions;
mod generated;
mod readme;
