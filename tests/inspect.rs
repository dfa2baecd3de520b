//! Placeholder: the inspect tests.
