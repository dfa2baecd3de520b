//! Tektite's step wrapper (`entrypoint`) and the pod ⇄ entrypoint contract.
//!
//! What it is for: every step container runs `/tekton/bin/entrypoint <flags>
//! -- <command>`. The wrapper waits for the previous step's marker file,
//! runs the command in its own process group, forwards signals, enforces the
//! step timeout, harvests results, writes its own marker and reports
//! `{exitCode, reason, startedAt, finishedAt, results}`. The engine and the
//! local runtime import the contract (paths, flags, report format, exit
//! codes) from [`contract`].
//!
//! What it must not depend on: anything of ours, a kube crate, an async
//! runtime. Its size is budgeted (≤ 3 MB static, ≤ 2 MB RSS while waiting).
//!
//! Data flow: [`flags::parse`] → [`step::Step::run`] with a [`wait::Waiter`],
//! a [`run::Runner`] and a [`report::Reporter`] (traits, so the logic is
//! tested with fakes) → exit code.

pub mod container;
pub mod contract;
pub mod flags;
pub mod patch;
pub mod procfs;
pub mod report;
pub mod results;
pub mod run;
pub mod step;
pub mod stepresults;
pub mod subcommands;
pub mod wait;
pub mod when;

pub use contract::*;
