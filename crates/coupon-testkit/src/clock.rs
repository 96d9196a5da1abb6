//! A process whose wall clock is off by a fixed offset, as on a host whose
//! clock drifted: Debian's libfaketime (package `faketime`, installed by `make
//! setup`) preloaded into the process itself. The `faketime` command would run
//! the program as its child, which outlives a kill of the command.
//!
//! Only the wall clock is shifted. The monotonic clock, by which timers and
//! timeouts wait, runs true, as it does on a skewed host.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

/// Runs `command` with its wall clock `offset` from the real one
/// (libfaketime's offsets: `+5`, `-5` seconds).
///
/// Shift a process forward only. Shifted back, librdkafka's timed waits (on
/// absolute wall-clock deadlines) end at once and its requests time out; and
/// redis-server does not start under libfaketime at all (a recursive
/// `clock_gettime` at start). So a clock behind cannot be made here.
pub fn shift(command: &mut Command, offset: &str) -> anyhow::Result<()> {
    command.env("LD_PRELOAD", libfaketime()?).env("FAKETIME", offset).env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    Ok(())
}

/// Debian's libfaketime, under `/usr/lib/<triplet>/faketime/`.
fn libfaketime() -> anyhow::Result<PathBuf> {
    std::fs::read_dir("/usr/lib")?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path().join("faketime/libfaketime.so.1"))
        .find(|library| library.exists())
        .context("libfaketime not found under /usr/lib/*/faketime; is the faketime package installed (make setup)?")
}
