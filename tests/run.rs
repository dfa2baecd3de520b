//! Placeholder: the run tests.
