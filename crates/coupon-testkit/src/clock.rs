//! A process whose wall clock is off by a fixed offset, as on a host whose
//! clock drifted: a library preloaded into the process itself (the `faketime`
//! and `datefudge` commands would run the program as their child, which
//! outlives a kill of the command). Both are Debian packages, installed by
//! `make setup`.
//!
//! - [`shift`]: libfaketime, for coupon-api. Only the wall clock is shifted;
//!   the monotonic clock, by which timers and timeouts wait, runs true, as on
//!   a skewed host.
//! - [`ahead`]: datefudge, for redis-server, which does not start under
//!   libfaketime (its allocator calls `clock_gettime` while libfaketime
//!   initialises: "unexpected recursive calls"). datefudge shifts the wall
//!   clock (`time`, `gettimeofday`, `clock_gettime`) and needs no setup.
//!
//! A coupon-api behind Redis is made by Redis ahead: shifted back under
//! libfaketime, librdkafka's timed waits (on absolute wall-clock deadlines)
//! end at once and its requests time out.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

/// Runs `command` with its wall clock `offset` from the real one
/// (libfaketime's offsets: `+5` seconds). Forward only (see above).
pub fn shift(command: &mut Command, offset: &str) -> anyhow::Result<()> {
    command.env("LD_PRELOAD", preloaded("faketime/libfaketime.so.1", "faketime")?);
    command.env("FAKETIME", offset).env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    Ok(())
}

/// Runs `command` with its wall clock `by` ahead of the real one, through
/// datefudge (which subtracts `DATEFUDGE` seconds from every reading).
pub fn ahead(command: &mut Command, by: Duration) -> anyhow::Result<()> {
    command.env("LD_PRELOAD", preloaded("datefudge/datefudge.so", "datefudge")?);
    command.env("DATEFUDGE", format!("-{}", by.as_secs()));
    Ok(())
}

/// A Debian package's library, under `/usr/lib/<triplet>/`.
fn preloaded(library: &str, package: &str) -> anyhow::Result<PathBuf> {
    std::fs::read_dir("/usr/lib")?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path().join(library))
        .find(|path| path.exists())
        .with_context(|| {
            format!("{library} not found under /usr/lib/*; is the {package} package installed (make setup)?")
        })
}
