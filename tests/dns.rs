//! DNS discovery tests (placeholder).
