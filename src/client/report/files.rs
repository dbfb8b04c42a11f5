//! Creating every report file before the run starts, so a typo in a path
//! fails in a millisecond instead of after a ten-minute run.

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::path::Path;

use crate::client::bench::options::OutputPaths;

/// The open report files of one run.
#[derive(Debug, Default)]
pub struct ReportFiles {
    /// `--csv`, opened for appending, and whether it was empty (needs a header).
    pub csv: Option<(File, bool)>,
    /// `--requests-csv`, truncated.
    pub requests_csv: Option<BufWriter<File>>,
    /// `--hgrm`, truncated.
    pub hgrm: Option<BufWriter<File>>,
    /// `--hdr-log`, truncated.
    pub hdr_log: Option<BufWriter<File>>,
    /// `--json`, truncated.
    pub json: Option<BufWriter<File>>,
}

impl ReportFiles {
    /// Opens (creating as needed) every file named in `paths`.
    ///
    /// # Errors
    /// A sentence naming the flag and the path that could not be opened.
    pub fn create(paths: &OutputPaths) -> Result<Self, String> {
        let create =
            |flag: &str, path: &Option<std::path::PathBuf>| -> Result<Option<BufWriter<File>>, String> {
                path.as_deref()
                    .map(|p| File::create(p).map(BufWriter::new).map_err(|e| cannot(flag, p, e)))
                    .transpose()
            };
        let csv = match &paths.csv {
            Some(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| cannot("--csv", path, e))?;
                let is_empty = file.metadata().map(|m| m.len() == 0).map_err(|e| cannot("--csv", path, e))?;
                Some((file, is_empty))
            }
            None => None,
        };
        Ok(ReportFiles {
            csv,
            requests_csv: create("--requests-csv", &paths.requests_csv)?,
            hgrm: create("--hgrm", &paths.hgrm)?,
            hdr_log: create("--hdr-log", &paths.hdr_log)?,
            json: create("--json", &paths.json)?,
        })
    }
}

fn cannot(flag: &str, path: &Path, error: std::io::Error) -> String {
    format!("{flag} {}: cannot open the file for writing: {error}", path.display())
}
