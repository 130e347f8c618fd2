//! Compliance: the control catalog (CIS Docker and Kubernetes benchmarks, NIST SP
//! 800-190 and 800-53, PCI DSS 4.0), targeted checks fired by drift alerts and
//! container events, the `Finding` they produce, and scheduled reports.
//!
//! It depends on `ingest`, `store` and `detect` (for the alerts that trigger checks) and
//! never on the query engine or delivery code.
//!
//! Nothing is implemented here yet.
