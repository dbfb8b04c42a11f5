//! `--json`: the whole result as one pretty-printed JSON document — the
//! [`RunReport`] of a benchmark, or the report of a lock-cycle run.

use std::fs::File;
use std::io::{BufWriter, Write};

use serde::Serialize;

use super::{Exporter, RunReport};
use crate::client::bench::BenchRun;
use crate::error::{Error, Result};

/// `--json`, created before the run.
pub(crate) struct Json {
    file: BufWriter<File>,
}

impl Json {
    /// The exporter for an already created file.
    pub(crate) fn new(file: BufWriter<File>) -> Self {
        Json { file }
    }

    /// Writes any report (the lock-cycle run has its own), followed by a
    /// newline.
    ///
    /// # Errors
    /// The file could not be written.
    pub(crate) fn write(mut self, report: &impl Serialize) -> Result<()> {
        serde_json::to_writer_pretty(&mut self.file, report)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(self.file))
            .and_then(|()| self.file.flush())
            .map_err(|e| Error::io("writing --json", e))
    }
}

impl Exporter for Json {
    fn finish(self: Box<Self>, _run: &BenchRun, report: &RunReport) -> Result<()> {
        self.write(report)
    }
}
