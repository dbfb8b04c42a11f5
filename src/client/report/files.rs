//! The one place that creates every report file before the run starts — so
//! a typo in a path fails in a millisecond instead of after a ten-minute
//! run — and has each format written once the run is over.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use super::cannot_open as cannot;
use super::csv_row::{CsvFile, CsvRow};
use super::hgrm::Hgrm;
use super::json::Json;
use super::requests_csv::RequestsCsv;
use super::summary::Summary;
use super::{Exporter, LiveRun, RunReport};
use crate::client::bench::options::OutputPaths;
use crate::client::bench::BenchRun;
use crate::error::Result;

/// Every output of one run, each behind its [`Exporter`].
pub(crate) struct Outputs {
    requests_csv: Option<RequestsCsv>,
    hdr_log: Option<BufWriter<File>>,
    hgrm: Option<Hgrm>,
    json: Option<Json>,
    csv: Option<CsvRow>,
}

impl Outputs {
    /// Opens (creating as needed) every file named in `paths`: `--csv` for
    /// appending, the others truncated.
    ///
    /// # Errors
    /// [`crate::error::Error::Io`] naming the flag and the path that could not be opened.
    pub(crate) fn create(paths: &OutputPaths) -> Result<Self> {
        let create = |flag: &str, path: &Option<PathBuf>| -> Result<Option<BufWriter<File>>> {
            path.as_deref()
                .map(|p| File::create(p).map(BufWriter::new).map_err(|e| cannot(flag, p, e)))
                .transpose()
        };
        let csv =
            paths.csv.as_deref().map(|path| CsvFile::open(path, "--csv").map(CsvRow::new)).transpose()?;
        Ok(Outputs {
            csv,
            requests_csv: create("--requests-csv", &paths.requests_csv)?.map(RequestsCsv::new),
            hgrm: create("--hgrm", &paths.hgrm)?.map(Hgrm::new),
            hdr_log: create("--hdr-log", &paths.hdr_log)?,
            json: create("--json", &paths.json)?.map(Json::new),
        })
    }

    /// Every exporter of a benchmark run, in the order they write: the
    /// streamed files first (their writers drain once the run is over),
    /// then the summary on stdout, then the files written from the result.
    pub(crate) fn into_exporters(self) -> Vec<Box<dyn Exporter>> {
        let mut exporters: Vec<Box<dyn Exporter>> = Vec::new();
        if let Some(e) = self.requests_csv {
            exporters.push(Box::new(e));
        }
        exporters.push(Box::new(Summary));
        if let Some(e) = self.hgrm {
            exporters.push(Box::new(e));
        }
        if let Some(e) = self.json {
            exporters.push(Box::new(e));
        }
        if let Some(e) = self.csv {
            exporters.push(Box::new(e));
        }
        exporters
    }

    /// Only the `--json` file (a lock-cycle run writes nothing else; the
    /// other files were still created, so a bad path failed early).
    /// The `--hdr-log` file, for the thread that merges the run's
    /// intervals ([`super::interval_log`]): it is written while the run goes.
    pub(crate) fn take_hdr_log(&mut self) -> Option<BufWriter<File>> {
        self.hdr_log.take()
    }

    pub(crate) fn into_json(self) -> Option<Json> {
        self.json
    }
}

/// Lets every exporter hook into the run before it starts.
pub(crate) fn attach_all(exporters: &mut [Box<dyn Exporter>], live: &mut LiveRun<'_>) {
    for exporter in exporters {
        exporter.attach(live);
    }
}

/// Has every exporter write, in order; the first failure stops the rest.
///
/// # Errors
/// The first exporter that could not write.
pub(crate) fn finish_all(
    exporters: Vec<Box<dyn Exporter>>,
    run: &BenchRun,
    report: &RunReport,
) -> Result<()> {
    exporters.into_iter().try_for_each(|exporter| exporter.finish(run, report))
}
