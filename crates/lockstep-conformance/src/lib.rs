//! Conformance suites: golden outputs, cross-backend comparison and reports
